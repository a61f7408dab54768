"""kmsplan: declarative KMS keys, reconciled against an HSM-backed key store."""

__version__ = "0.1.0"
