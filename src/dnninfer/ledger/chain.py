"""The ledger state machine: validate blocks, track every branch, pick the heaviest chain.

The `Ledger` keeps every valid block by hash (so forks are kept, not discarded), its children,
its cumulative work, and the reputation table and the public keys after it. It holds public keys
only (`identity.PublicKeys`): the genesis keys, which the genesis block commits to, then whatever
the key rotations on each branch made of them. A block is accepted only if all of these hold,
checked in this order (the first failure is the reason reported), every key read from the
PARENT's keys:

1. it is new and its parent is known; index = parent.index + 1; timestamp >= parent's;
2. the miner is a known AP; every receipt is for this ledger (its `chain` is the genesis hash),
   names a known gateway and AP, carries its gateway's Ed25519 signature, and no (gateway, slot)
   appears twice in the block or on the branch;
3. every key rotation is for this ledger, is its identity's next rotation number, introduces a key
   no identity holds, and is signed by the identity's current key;
4. the Merkle root matches the receipts and rotations;
5. the header is signed by the miner's registered key: the key that signed is the identity whose
   stake sets the target (a block naming an AP it was not signed by is rejected here);
6. target == stake_target(t0, kappa, rho_signer) with rho read from the PARENT's table (a stale or
   forged target is rejected before PoW is even looked at);
7. PoW: int(hash) < target;
8. reputation_root == hash of the parent's table updated with this block's receipts.

Rotations in a block take effect for its children: the block itself is checked with the old keys.

Fork choice: the head is the block with the most cumulative `block_work`, ties broken by the
lowest block hash; this is a total order, so every replica picks the same head whatever order the
blocks arrived in. Persistence is optional: a `store` (see `store.py`) gets each block after it
validates and before the in-memory state changes, so memory never runs ahead of disk.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Protocol

from dnninfer.ledger.block import GENESIS_MINER, Block
from dnninfer.ledger.canonical import sha256_hex
from dnninfer.ledger.consensus import HASH_SPACE, block_work, stake_target
from dnninfer.ledger.errors import LedgerError
from dnninfer.ledger.identity import Keyring, PublicKeys, SigningKey
from dnninfer.ledger.params import LedgerParams
from dnninfer.ledger.receipt import Receipt
from dnninfer.ledger.reputation import Table, apply_block, initial_table, table_root
from dnninfer.ledger.rotation import KeyRotation

_GENESIS_DOMAIN = b"dnninfer-genesis-v2\n"


class BlockSink(Protocol):
    """Where accepted blocks are persisted (a `LedgerStore`).

    `append` gets the block and what the ledger will look like once it is added: the heaviest tip
    `head` (may be `block` itself) and `blocks`, the number of valid blocks on every branch, genesis
    excluded. A store writes all three atomically, so a later truncation of the file is detectable.
    """

    def append(self, block: Block, head: Block, blocks: int) -> None: ...

    def close(self) -> None: ...


def genesis_block(params: LedgerParams, keys: PublicKeys) -> Block:
    """The deterministic genesis: commits to the parameters and the genesis public keys (prev_hash)
    and to the initial table. Its hash identifies the ledger (`Ledger.chain`)."""
    commitment = sha256_hex(_GENESIS_DOMAIN + params.to_json() + b"\n" + keys.to_json())
    return Block.build(index=0, prev_hash=commitment, miner=GENESIS_MINER, receipts=(),
                       reputation_root=table_root(initial_table(params)), target=params.t0,
                       timestamp_us=params.genesis_time_us)


def genesis_keys(params: LedgerParams, keys: PublicKeys | Keyring | Mapping[str, str]) -> PublicKeys:
    """The public keys of every gateway and AP in `params`, exactly (from a keyring: its public half)."""
    names = list(dict.fromkeys(params.gateways + params.aps))
    if isinstance(keys, Keyring):
        keys = keys.public_keys(names)
    elif not isinstance(keys, PublicKeys):
        keys = PublicKeys(keys)
    for n in names:
        if n not in keys:
            role = "gateway" if n in params.gateways else "AP"
            raise LedgerError(f"keys: no public key for {role} {n!r}")
    extra = [n for n in keys if n not in names]
    if extra:
        raise LedgerError(f"keys: {extra[0]!r} is neither a gateway nor an AP of the parameters")
    return keys


class Ledger:
    """All valid blocks of one chain, their reputation tables and public keys, and the heaviest-chain head.

    `keys` are the genesis public keys (or a `Keyring`, whose public half is taken). A keyring is
    also kept as `signers`, the private keys of the parties this process acts for (a simulation or
    demo plays every party; see `miner.mine_block`); validation never uses it, and a ledger opened
    from a file has none.
    """

    def __init__(self, params: LedgerParams, keys: PublicKeys | Keyring | Mapping[str, str],
                 store: BlockSink | None = None):
        self.signers: Keyring | None = keys if isinstance(keys, Keyring) else None
        self.genesis_keys = genesis_keys(params, keys)
        self.params = params
        self.store = store
        g = genesis_block(params, self.genesis_keys)
        self.genesis = g
        self.chain = g.hash
        self.blocks: dict[str, Block] = {g.hash: g}
        self.children: dict[str, list[str]] = {g.hash: []}
        self.work: dict[str, int] = {g.hash: 0}
        self._tables: dict[str, Table] = {g.hash: initial_table(params)}
        self._keys: dict[str, PublicKeys] = {g.hash: self.genesis_keys}
        self._receipt_blocks: dict[tuple[str, int], list[str]] = {}
        self._head = g.hash
        self.problems: list[str] = []  # rows rejected when loaded from a file (see store.open_ledger)
        self.warnings: list[str] = []  # things a verify reports without failing (none at present)

    # -- reading -------------------------------------------------------------------------------
    @property
    def head(self) -> Block:
        return self.blocks[self._head]

    @property
    def height(self) -> int:
        return self.head.index

    def __len__(self) -> int:
        return len(self.blocks)

    def __contains__(self, block_hash: object) -> bool:
        return block_hash in self.blocks

    def main_chain(self) -> list[Block]:
        """Genesis .. head along parent links."""
        return self.branch(self._head)

    def branch(self, tip: str) -> list[Block]:
        out = []
        h = tip
        while True:
            b = self.blocks[h]
            out.append(b)
            if b.index == 0:
                return out[::-1]
            h = b.prev_hash

    def _resolve(self, at: str | int | None) -> str:
        if at is None:
            return self._head
        if isinstance(at, int) and not isinstance(at, bool):
            chain = self.main_chain()
            if not 0 <= at < len(chain):
                raise LedgerError(f"no block at height {at} (main chain height {self.height})")
            return chain[at].hash
        if at not in self.blocks:
            raise LedgerError(f"unknown block {at!r}")
        return at

    def reputation(self, at: str | int | None = None) -> Table:
        """Reputation table after block `at` (a hash or a main-chain height; default: the head). A copy."""
        return dict(self._tables[self._resolve(at)])

    def public_keys(self, at: str | int | None = None) -> PublicKeys:
        """The public keys valid for the children of block `at` (a hash or a main-chain height; default: head)."""
        return self._keys[self._resolve(at)]

    def rotation(self, name: str, new_key: str, key: SigningKey, parent: str | None = None) -> KeyRotation:
        """`name`'s next key rotation on `parent` (default: head), signed with `key` (its current key)."""
        keys = self._keys[self._resolve(parent)]
        if name not in keys:
            raise LedgerError(f"unknown identity {name!r}")
        return KeyRotation.create(name=name, seq=keys.rotations(name) + 1, new_key=new_key, chain=self.chain, key=key)

    def target_for(self, miner: str, parent: str | None = None) -> int:
        """PoW target of `miner` for a block on `parent` (default: the head)."""
        if miner not in self.params.aps:
            raise LedgerError(f"unknown AP {miner!r}; known: {list(self.params.aps)}")
        rho = self._tables[self._resolve(parent)][miner]
        return stake_target(self.params.t0, self.params.kappa, rho)

    def expected_hashes(self, miner: str, parent: str | None = None) -> float:
        """Mean hashes `miner` needs for the next block on `parent`: 2^256 / T_m."""
        return HASH_SPACE / self.target_for(miner, parent)

    def has_receipt(self, gateway: str, slot: int, tip: str | None = None) -> bool:
        """Whether a receipt for (gateway, slot) is already on the branch ending at `tip` (default: head)."""
        return self._on_branch((gateway, slot), self._resolve(tip))

    def _on_branch(self, key: tuple[str, int], tip: str) -> bool:
        holders = self._receipt_blocks.get(key)
        if not holders:
            return False
        tip_block = self.blocks[tip]
        for h in holders:
            target_height = self.blocks[h].index
            if target_height > tip_block.index:
                continue
            b = tip_block
            while b.index > target_height:
                b = self.blocks[b.prev_hash]
            if b.hash == h:
                return True
        return False

    def mined_counts(self) -> dict[str, int]:
        """Blocks each AP mined on the main chain."""
        counts = dict.fromkeys(self.params.aps, 0)
        for b in self.main_chain()[1:]:
            counts[b.miner] += 1
        return counts

    def stale_blocks(self) -> list[Block]:
        """Valid blocks that are not on the main chain (lost forks)."""
        main = {b.hash for b in self.main_chain()}
        return [b for h, b in self.blocks.items() if h not in main]

    # -- building ------------------------------------------------------------------------------
    def check_receipts(self, receipts: Sequence[Receipt], parent: str, what: str = "receipts") -> None:
        """This ledger's, known gateway/AP, the gateway's signature (its key at `parent`), and no duplicate
        (gateway, slot) in `receipts` or on the branch."""
        seen: set[tuple[str, int]] = set()
        keys = self._keys[parent]
        for r in receipts:
            if r.gateway not in self.params.gateways:
                raise LedgerError(f"{what}: receipt ({r.gateway}, slot {r.slot}): unknown gateway {r.gateway!r}")
            if r.ap not in self.params.aps:
                raise LedgerError(f"{what}: receipt ({r.gateway}, slot {r.slot}): unknown AP {r.ap!r}")
            try:
                r.verify(keys, self.chain)
            except LedgerError as e:
                raise LedgerError(f"{what}: {e}") from None
            if r.key in seen:
                raise LedgerError(f"{what}: receipt ({r.gateway}, slot {r.slot}) appears twice in the block")
            seen.add(r.key)
            if self._on_branch(r.key, parent):
                raise LedgerError(f"{what}: receipt ({r.gateway}, slot {r.slot}) is already on this branch (replay)")

    def check_rotations(self, rotations: Sequence[KeyRotation], parent: str, what: str = "rotations") -> PublicKeys:
        """Each rotation valid on `parent` (see the module docstring, rule 3); returns the keys after them."""
        keys = self._keys[parent]
        seen: set[str] = set()
        new: set[str] = set()
        for k in rotations:
            w = f"{what}: key rotation ({k.name}, #{k.seq})"
            if k.name not in keys:
                raise LedgerError(f"{w}: unknown identity {k.name!r}")
            if k.chain != self.chain:
                raise LedgerError(f"{w}: belongs to another ledger (genesis {k.chain[:12]}.., this ledger's is "
                                  f"{self.chain[:12]}..): replayed from elsewhere")
            if k.name in seen:
                raise LedgerError(f"{w}: a second rotation of {k.name!r} in the same block")
            want = keys.rotations(k.name) + 1
            if k.seq != want:
                raise LedgerError(f"{w}: stale or replayed ({k.name!r} has rotated {want - 1} time(s), so its next "
                                  f"rotation is #{want})")
            owner = keys.owner(k.new_key)
            if owner is not None or k.new_key in new:
                raise LedgerError(f"{w}: the new key is already registered (to {owner or 'another rotation'!r})")
            if not k.signature:
                raise LedgerError(f"{w}: unsigned")
            if not k.signed_by(keys[k.name]):
                raise LedgerError(f"{w}: invalid signature (not signed by the current key of {k.name!r}, or altered "
                                  "after signing)")
            seen.add(k.name)
            new.add(k.new_key)
        for k in rotations:
            keys = keys.rotated(k.name, k.new_key)
        return keys

    def propose(self, miner: str, receipts: Iterable[Receipt], *, parent: str | None = None,
                timestamp_us: int | None = None, rotations: Iterable[KeyRotation] = ()) -> Block:
        """An unsealed block on `parent` (default: head) with the right target and reputation root.

        Receipts and rotations are checked first so a miner never spends work on a block validators
        would reject. The timestamp defaults to the latest of the parent's and the receipts' timestamps.
        """
        p = self._resolve(parent)
        rs, ks = tuple(receipts), tuple(rotations)
        self.check_receipts(rs, p)
        self.check_rotations(ks, p)
        pb = self.blocks[p]
        if timestamp_us is None:
            timestamp_us = max([pb.timestamp_us, *(r.timestamp_us for r in rs)])
        return Block.build(index=pb.index + 1, prev_hash=p, miner=miner, receipts=rs, rotations=ks,
                           reputation_root=table_root(apply_block(self.params, self._tables[p], rs)),
                           target=self.target_for(miner, p), timestamp_us=timestamp_us)

    # -- validation and appending --------------------------------------------------------------
    def check_block(self, block: Block) -> Table:
        """Validate `block` against the current state without changing it; returns its reputation table."""
        return self._check(block)[0]

    def _check(self, block: Block) -> tuple[Table, PublicKeys]:
        h = block.hash
        w = f"block {block.index} ({h[:12]})"
        known = self.blocks.get(h)
        if known is not None and known == block:
            raise LedgerError(f"{w}: already in the ledger")
        # A different block with a known hash has the same header but other receipts: validation
        # below must fail (Merkle root); the guard at the end only defends against a broken hash.
        parent = self.blocks.get(block.prev_hash)
        if parent is None:
            raise LedgerError(f"{w}: unknown parent {block.prev_hash[:12]}")
        if block.index != parent.index + 1:
            raise LedgerError(f"{w}: index {block.index} does not follow its parent's index {parent.index}")
        if block.timestamp_us < parent.timestamp_us:
            raise LedgerError(f"{w}: timestamp {block.timestamp_us} us is before its parent's {parent.timestamp_us} us")
        if block.miner not in self.params.aps:
            raise LedgerError(f"{w}: unknown miner {block.miner!r}; known APs: {list(self.params.aps)}")
        self.check_receipts(block.receipts, parent.hash, w)
        keys_after = self.check_rotations(block.rotations, parent.hash, w)
        if not block.merkle_ok():
            raise LedgerError(f"{w}: merkle root does not match its receipts and key rotations")
        signer = self._signer(block, self._keys[parent.hash], w)
        parent_table = self._tables[parent.hash]
        rho = parent_table[signer]  # the stake of the key that signed
        want = stake_target(self.params.t0, self.params.kappa, rho)
        if block.target != want:
            raise LedgerError(f"{w}: stale or forged target: block claims {block.target:#x}, but miner "
                              f"{signer!r} with reputation {rho} in the parent's table has {want:#x}")
        if not block.pow_ok():
            raise LedgerError(f"{w}: insufficient proof of work (hash is not below the target)")
        table = apply_block(self.params, parent_table, block.receipts)
        if table_root(table) != block.reputation_root:
            raise LedgerError(f"{w}: reputation root does not match the recomputed reputation table")
        if known is not None:
            raise LedgerError(f"{w}: conflicts with a stored block of the same hash")
        return table, keys_after

    @staticmethod
    def _signer(block: Block, keys: PublicKeys, w: str) -> str:
        """The identity whose registered key signed `block`: its named miner, or the block is rejected."""
        if not block.signature:
            raise LedgerError(f"{w}: unsigned (a block must carry its miner's signature)")
        if block.signed_by(keys[block.miner]):
            return block.miner
        other = next((n for n, pk in keys.items() if n != block.miner and block.signed_by(pk)), None)
        if other is not None:
            raise LedgerError(f"{w}: names miner {block.miner!r} but was signed by the key of {other!r} (a block "
                              "gets the target of the key that signed it, and must name that identity)")
        raise LedgerError(f"{w}: invalid miner signature (not signed by the key registered for {block.miner!r}, "
                          "or altered after signing)")

    def add_block(self, block: Block) -> None:
        """Validate and append `block` (persisting it first when a store is attached); may move the head.

        Raises `LedgerError` with the reason when the block is invalid; the state is then unchanged.
        """
        table, keys = self._check(block)
        work = self.work[block.prev_hash] + block_work(block.target)
        head = self._head
        if (work, head) > (self.work[head], block.hash):  # more work, or equal work and a lower hash
            head = block.hash
        if self.store is not None:  # len(self.blocks) counts genesis, so it is the non-genesis count after
            self.store.append(block, block if head == block.hash else self.blocks[head], len(self.blocks))
        self._insert(block, table, keys, work, head)

    def _insert(self, block: Block, table: Table, keys: PublicKeys, work: int, head: str) -> None:
        h = block.hash
        self.blocks[h] = block
        self.children[h] = []
        self.children[block.prev_hash].append(h)
        self.work[h] = work
        self._tables[h] = table
        self._keys[h] = keys
        for r in block.receipts:
            self._receipt_blocks.setdefault(r.key, []).append(h)
        self._head = head

    def replay(self, blocks: Iterable[Block] | None = None) -> Table:
        """Re-validate `blocks` (default: the main chain, genesis optional) on a fresh ledger from genesis.

        Returns the table after the last block; replay is deterministic, so it equals the stored one.
        """
        fresh = Ledger(self.params, self.genesis_keys)
        last = fresh.genesis.hash
        for b in self.main_chain() if blocks is None else blocks:
            if b.index == 0:
                if b != fresh.genesis:
                    raise LedgerError("replay: genesis block does not match the parameters")
                continue
            fresh.add_block(b)
            last = b.hash
        return fresh.reputation(last)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    def __enter__(self) -> Ledger:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Ledger(height={self.height}, blocks={len(self.blocks)}, head={self._head[:12]})"
