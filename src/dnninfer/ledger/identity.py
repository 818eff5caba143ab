"""Ed25519 identities: private keys in key files, public keys in the ledger.

Every gateway and every AP is an Ed25519 key pair (RFC 8032, through the `cryptography` package).
The private key stays with its owner, in a key file outside the ledger (`write_key_file`,
`load_key_file`: mode 0600, refused when group or others may read it); the ledger holds public
keys only: the genesis keys (stored in the file's meta table and committed to by the genesis
block) and the rotations recorded in blocks since (`rotation.KeyRotation`). So `ledger verify`
needs no secret, and whoever holds the ledger file can check every signature but make none.

`Keyring` is the private side: the keys of the parties one process acts for. A deployment loads
each party's own key file; a simulation or a demo plays every party and may derive the keys from
a seed (`Keyring.derive`): reproducible, hence not secret, and meant for simulations only.
"""

from __future__ import annotations

import functools
import hashlib
import os
import stat
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from dnninfer.errors import UserError
from dnninfer.ledger.canonical import canonical_json, check_hex64, check_id, exact_keys, parse_json
from dnninfer.ledger.errors import LedgerError

KEY_FORMAT = "dnninfer-ed25519-key/1"
KEY_SUFFIX = ".key"
_DERIVE_DOMAIN = b"dnninfer-ed25519-derive-v1\n"
_MAX_KEY_FILE = 4096


class KeyFileError(UserError):
    """A key file is missing, unreadable, readable by others or malformed (one line, names the file)."""


@functools.lru_cache(maxsize=4096)
def _public_key(public_hex: str) -> Ed25519PublicKey:
    return Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_hex))


def verify_signature(public_hex: str, signature_hex: str, message: bytes) -> bool:
    """Whether `signature_hex` is the Ed25519 signature of `message` by the key `public_hex`."""
    try:
        _public_key(public_hex).verify(bytes.fromhex(signature_hex), message)
    except (InvalidSignature, ValueError):
        return False
    return True


class SigningKey:
    """One party's private key and the name it signs as (never printed)."""

    __slots__ = ("_key", "name", "public")

    def __init__(self, name: str, private: Ed25519PrivateKey):
        self.name = check_id(name, "key: name")
        self._key = private
        self.public = private.public_key().public_bytes_raw().hex()

    @classmethod
    def generate(cls, name: str) -> SigningKey:
        """A fresh random key (the operating system's randomness)."""
        return cls(name, Ed25519PrivateKey.generate())

    @classmethod
    def from_seed(cls, name: str, seed: bytes) -> SigningKey:
        if len(seed) != 32:
            raise LedgerError(f"key of {name!r}: an Ed25519 seed is 32 bytes, got {len(seed)}")
        return cls(name, Ed25519PrivateKey.from_private_bytes(seed))

    def sign(self, message: bytes) -> str:
        """The Ed25519 signature of `message`, 128 hex digits (deterministic, RFC 8032)."""
        return self._key.sign(message).hex()

    def to_json(self) -> bytes:
        """The key file's content (`KEY_FORMAT`): holds the secret, write it with `write_key_file` only."""
        return canonical_json({"format": KEY_FORMAT, "name": self.name,
                               "private_key": self._key.private_bytes_raw().hex(), "public_key": self.public})

    def __eq__(self, other: object) -> bool:
        return isinstance(other, SigningKey) and (self.name, self.public) == (other.name, other.public)

    def __hash__(self) -> int:
        return hash((self.name, self.public))

    def __repr__(self) -> str:
        return f"SigningKey({self.name!r}, public={self.public[:16]}..)"


def write_key_file(path: str | Path, key: SigningKey) -> Path:
    """Write `key` to a new file at `path`, mode 0600; an existing file is never overwritten."""
    p = Path(path)
    try:
        fd = os.open(p, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise KeyFileError(f"key file {p}: already exists (a key file is never overwritten)") from None
    except OSError as e:
        raise KeyFileError(f"key file {p}: cannot create it ({e.strerror})") from None
    with os.fdopen(fd, "wb") as f:
        os.fchmod(f.fileno(), 0o600)  # whatever the umask
        f.write(key.to_json() + b"\n")
        f.flush()
        os.fsync(f.fileno())
    return p


def load_key_file(path: str | Path, name: str | None = None) -> SigningKey:
    """The key in `path`; with `name`, it must be that party's key. Any problem is a `KeyFileError`."""
    p = Path(path)
    whose = f" (the private key of {name!r})" if name else ""
    try:
        fd = os.open(p, os.O_RDONLY)
    except FileNotFoundError:
        raise KeyFileError(f"key file {p}: no such file{whose}") from None
    except OSError as e:
        raise KeyFileError(f"key file {p}: cannot read it ({e.strerror})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            raise KeyFileError(f"key file {p}: cannot read it (not a regular file)")
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o077:
            raise KeyFileError(f"key file {p}: readable by other users (mode {mode:04o}); a private key must be "
                               f"mode 0600 (chmod 600 {p})")
        raw = os.read(fd, _MAX_KEY_FILE + 1)
    except OSError as e:
        raise KeyFileError(f"key file {p}: cannot read it ({e.strerror})") from None
    finally:
        os.close(fd)
    try:
        if len(raw) > _MAX_KEY_FILE:
            raise LedgerError(f"longer than {_MAX_KEY_FILE} bytes")
        key = _parse_key(raw)
    except LedgerError as e:
        raise KeyFileError(f"key file {p}: malformed ({e}); expected the {KEY_FORMAT} JSON that "
                           "`dnninfer ledger keygen` writes") from None
    if name is not None and key.name != name:
        raise KeyFileError(f"key file {p}: holds the key of {key.name!r}, expected {name!r}")
    return key


def _parse_key(raw: bytes) -> SigningKey:
    d = exact_keys(parse_json(raw, "key"), {"format", "name", "private_key", "public_key"}, "key")
    if d["format"] != KEY_FORMAT:
        raise LedgerError(f"format {d['format']!r}, expected {KEY_FORMAT!r}")
    key = SigningKey.from_seed(check_id(d["name"], "field 'name'"),
                               bytes.fromhex(check_hex64(d["private_key"], "field 'private_key'")))
    if check_hex64(d["public_key"], "field 'public_key'") != key.public:
        raise LedgerError("field 'public_key' is not the private key's public key")
    return key


class PublicKeys(Mapping[str, str]):
    """Identity -> Ed25519 public key (64 hex digits), and how often each identity has rotated its key.

    A key belongs to one identity only, so the key that signed names the signer. Immutable: a
    rotation gives a new `PublicKeys` (`rotated`).
    """

    def __init__(self, keys: Mapping[str, str], rotations: Mapping[str, int] | None = None):
        if not isinstance(keys, Mapping):
            raise LedgerError(f"keys: expected an object of name -> public key, got {type(keys).__name__}")
        self._keys: dict[str, str] = {}
        self._owner: dict[str, str] = {}
        for name in sorted(keys):
            check_id(name, "keys: name")
            public = check_hex64(keys[name], f"keys: public key of {name!r}")
            if public in self._owner:
                raise LedgerError(f"keys: {self._owner[public]!r} and {name!r} have the same public key")
            self._keys[name] = public
            self._owner[public] = name
        self._rotations = {n: int((rotations or {}).get(n, 0)) for n in self._keys}

    def __getitem__(self, name: str) -> str:
        return self._keys[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:
        return f"PublicKeys({ {n: k[:12] for n, k in self._keys.items()} })"

    def owner(self, public: str) -> str | None:
        """The identity whose key `public` is, if any."""
        return self._owner.get(public)

    def rotations(self, name: str) -> int:
        """How many times `name` has rotated its key (0: still its genesis key)."""
        return self._rotations[name]

    def rotated(self, name: str, public: str) -> PublicKeys:
        """These keys with `name`'s key replaced by `public` (one more rotation)."""
        return PublicKeys({**self._keys, name: public}, {**self._rotations, name: self._rotations[name] + 1})

    def to_dict(self) -> dict[str, str]:
        return dict(self._keys)

    def to_json(self) -> bytes:
        return canonical_json(self.to_dict())

    @classmethod
    def from_json(cls, text: str | bytes) -> PublicKeys:
        return cls(parse_json(text, "keys"))


class Keyring(Mapping[str, SigningKey]):
    """The private keys of the parties one process acts for, by name (never printed).

    A keyring made by `derive` holds a seed secret and derives any party's key on first use: a
    simulation plays every party. Such keys are only as secret as the seed.
    """

    def __init__(self, keys: Iterable[SigningKey] = (), *, secret: bytes | None = None):
        self._keys: dict[str, SigningKey] = {}
        for k in keys:
            if k.name in self._keys:
                raise LedgerError(f"keyring: two keys for {k.name!r}")
            self._keys[k.name] = k
        self._secret = secret

    @classmethod
    def derive(cls, names: Iterable[str] = (), secret: bytes | str = b"dnninfer-demo") -> Keyring:
        """Deterministic keys for simulations and tests: seed = SHA-256(domain, secret, name).

        `names` are derived at once; any other name is derived when first asked for.
        """
        s = secret.encode() if isinstance(secret, str) else secret
        ring = cls(secret=s)
        for n in names:
            _ = ring[n]  # derived now
        return ring

    @classmethod
    def generate(cls, names: Iterable[str]) -> Keyring:
        """Fresh random keys for `names`."""
        return cls(SigningKey.generate(n) for n in names)

    @classmethod
    def load(cls, directory: str | Path, names: Iterable[str]) -> Keyring:
        """Each party's key from ``directory/NAME.key`` (see `load_key_file`)."""
        d = Path(directory)
        return cls(load_key_file(d / f"{n}{KEY_SUFFIX}", n) for n in names)

    @classmethod
    def open_dir(cls, directory: str | Path, names: Iterable[str]) -> Keyring:
        """Keys from ``directory/NAME.key``, generating (and writing, mode 0600) those that are missing."""
        d = Path(directory)
        if d.exists() and not d.is_dir():
            raise KeyFileError(f"key directory {d}: not a directory")
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        keys = []
        for n in names:
            path = d / f"{n}{KEY_SUFFIX}"
            if not path.exists():
                write_key_file(path, SigningKey.generate(n))
            keys.append(load_key_file(path, n))
        return cls(keys)

    def save(self, directory: str | Path) -> list[Path]:
        """Write every key held to ``directory/NAME.key`` (mode 0600; existing files are refused)."""
        d = Path(directory)
        d.mkdir(mode=0o700, parents=True, exist_ok=True)
        return [write_key_file(d / f"{n}{KEY_SUFFIX}", k) for n, k in self._keys.items()]

    def __getitem__(self, name: str) -> SigningKey:
        key = self._keys.get(name)
        if key is None:
            if self._secret is None:
                raise KeyError(name)
            seed = hashlib.sha256(_DERIVE_DOMAIN + self._secret + b"\n" + check_id(name, "key: name").encode())
            key = self._keys[name] = SigningKey.from_seed(name, seed.digest())
        return key

    def __contains__(self, name: object) -> bool:
        return name in self._keys or (self._secret is not None and isinstance(name, str))

    def __iter__(self) -> Iterator[str]:
        return iter(self._keys)

    def __len__(self) -> int:
        return len(self._keys)

    def __repr__(self) -> str:  # never print secrets
        return f"Keyring({sorted(self._keys)}{', derived' if self._secret is not None else ''})"

    def with_key(self, key: SigningKey) -> Keyring:
        """This keyring with `key` replacing its name's key (after a rotation)."""
        return Keyring([k for n, k in self._keys.items() if n != key.name] + [key], secret=self._secret)

    def public_keys(self, names: Iterable[str] | None = None) -> PublicKeys:
        """The public keys of `names` (default: every key held)."""
        want = list(self._keys) if names is None else list(names)
        missing = [n for n in want if n not in self]
        if missing:
            raise LedgerError(f"keyring: no key for {missing[0]!r}")
        return PublicKeys({n: self[n].public for n in want})
