"""`kmsplan serve`: the key store as a network service speaking the AWS KMS JSON protocol.

    wire.py         the AWS JSON 1.1 protocol, driven by botocore's own KMS service model
    sigv4.py        Signature Version 4: the verifier the server runs, and a small signer
    credentials.py  access keys: ids and principals in SQLite, secrets inside the HSM token
    http.py         the pre-fork HTTP server: a parent that binds, workers that each open the store

Any client that speaks AWS KMS (boto3, the AWS CLI, the AWS Encryption SDK) talks to it by pointing
its endpoint URL at the server; see docs/server.md.
"""
