"""A small, real blockchain for B-DT: signed inference receipts, reputation-as-stake PoW, SQLite."""
