"""The key store: AWS KMS semantics over a PKCS#11 token and a SQLite database.

    from kmsplan.store import KeyStore
    store = KeyStore.open(".kmsplan")
    kms = store.client(region="eu-west-1", principal="arn:aws:iam::111122223333:role/admin")
"""

from kmsplan.errors import KMSError
from kmsplan.store.keystore import KeyStore

__all__ = ["KeyStore", "KMSError"]
