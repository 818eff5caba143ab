"""A small, real blockchain for B-DT: Ed25519-signed receipts and blocks, reputation-as-stake PoW, SQLite."""
