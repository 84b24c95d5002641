"""Voter accounts for the shared arena app: passwords, invite codes and per-voter limits.

A voter signs in either with an account made by the owner, or with any new name and
an invite code as the password; the first such sign-in creates the account (the code
becomes its password) and uses up one of the invite's uses.
"""

from __future__ import annotations

import hashlib
import hmac
import math
import re
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy import update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from app.core.errors import Conflict, InvalidInput, NotFound, RateLimited
from app.core.settings import Settings
from app.core.tables import VoterAccount, VoterInvite

if TYPE_CHECKING:
    from app.core.workbench import Workbench

PBKDF2_ITERATIONS = 100_000
SALT_BYTES = 16
USERNAME_RE = re.compile(r"[A-Za-z0-9_.-]{2,32}")
# Names the workbench itself records as voters (the REST API without --auth, the local UI):
# a voter account of that name would mix its votes and budget with theirs.
RESERVED_NAMES = frozenset({"api", "local"})
MIN_PASSWORD_CHARS = 6
WINDOW_S = 60.0


# --- passwords -------------------------------------------------------------------------------


def _pbkdf2(password: str, salt: bytes, iterations: int) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode("utf-8"), salt, iterations)


def hash_password(password: str, iterations: int = PBKDF2_ITERATIONS) -> str:
    """PBKDF2-HMAC-SHA256 with a random salt, as ``"iterations$salt_hex$hash_hex"``."""
    if iterations < 1:
        raise ValueError("iterations must be positive")
    salt = secrets.token_bytes(SALT_BYTES)
    return f"{iterations}${salt.hex()}${_pbkdf2(password, salt, iterations).hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a string made by `hash_password` (malformed: False)."""
    try:
        iter_s, salt_hex, hash_hex = stored.split("$")
        iterations = int(iter_s)
        salt, expected = bytes.fromhex(salt_hex), bytes.fromhex(hash_hex)
    except (AttributeError, ValueError):
        return False
    if iterations < 1 or not salt or not expected:
        return False
    return hmac.compare_digest(_pbkdf2(password, salt, iterations), expected)


# --- accounts and invites --------------------------------------------------------------------


def valid_username(username: str) -> bool:
    return (isinstance(username, str) and USERNAME_RE.fullmatch(username) is not None
            and username.lower() not in RESERVED_NAMES)


def _check_username(username: str) -> None:
    if isinstance(username, str) and username.lower() in RESERVED_NAMES:
        raise InvalidInput(f"the voter name {username!r} is reserved for the workbench's own votes")
    if not valid_username(username):
        raise InvalidInput(
            "a voter name needs 2 to 32 characters: letters, digits, '_', '-' or '.'"
        )


def _get_account(s: Session, username: str) -> VoterAccount | None:
    return s.exec(select(VoterAccount).where(VoterAccount.username == username)).first()


def create_voter(wb: Workbench, username: str, password: str) -> VoterAccount:
    _check_username(username)
    if not isinstance(password, str) or len(password) < MIN_PASSWORD_CHARS:
        raise InvalidInput(f"a voter password needs at least {MIN_PASSWORD_CHARS} characters")
    account = VoterAccount(username=username, password_hash=hash_password(password))
    with wb.session() as s:
        if _get_account(s, username) is not None:
            raise Conflict(f"a voter named {username!r} already exists")
        s.add(account)
        try:
            s.commit()
        except IntegrityError:  # created by someone else in between
            s.rollback()
            raise Conflict(f"a voter named {username!r} already exists") from None
        s.refresh(account)
    return account


def create_invite(wb: Workbench, max_uses: int = 1, note: str = "") -> VoterInvite:
    if isinstance(max_uses, bool) or not isinstance(max_uses, int) or max_uses < 1:
        raise InvalidInput("an invite needs at least one use")
    with wb.session() as s:
        for _ in range(10):
            invite = VoterInvite(code=secrets.token_urlsafe(9), max_uses=max_uses, note=note or "")
            if s.exec(select(VoterInvite).where(VoterInvite.code == invite.code)).first() is not None:
                continue
            s.add(invite)
            try:
                s.commit()
            except IntegrityError:
                s.rollback()
                continue
            s.refresh(invite)
            return invite
    raise Conflict("could not make a unique invite code; try again")  # pragma: no cover


def _redeem_invite(wb: Workbench, username: str, code: str) -> bool:
    """Create ``username`` from an invite with uses left; False when there is none."""
    with wb.session() as s:
        invite = s.exec(select(VoterInvite).where(VoterInvite.code == code)).first()
    if invite is None or invite.uses >= invite.max_uses:
        return False
    password_hash = hash_password(code)  # slow: done before taking the write lock
    with wb.session() as s:
        # Check and count the use in one statement, so two voters racing for the last
        # use cannot both get in; the account insert commits in the same transaction.
        claim = (
            update(VoterInvite)
            .where(VoterInvite.id == invite.id, VoterInvite.uses < VoterInvite.max_uses)
            .values(uses=VoterInvite.uses + 1)
            .execution_options(synchronize_session=False)
        )
        if s.exec(claim).rowcount != 1:
            s.rollback()
            return False
        s.add(VoterAccount(username=username, password_hash=password_hash, invite_id=invite.id))
        try:
            s.commit()
        except IntegrityError:
            # The same name was taken meanwhile; rolling back also returns the use.
            s.rollback()
        else:
            return True
    # Someone else made this name first (perhaps with this same code): a normal login.
    with wb.session() as s:
        account = _get_account(s, username)
    return account is not None and not account.disabled and verify_password(code, account.password_hash)


def authenticate(wb: Workbench, username: str, password: str) -> bool:
    """Whether the voter may sign in; a new name with an invite code creates the account.

    Never raises for bad credentials: a wrong, unknown or malformed login is just False.
    """
    if not valid_username(username) or not isinstance(password, str) or not password:
        return False
    with wb.session() as s:
        account = _get_account(s, username)
    if account is not None:
        return not account.disabled and verify_password(password, account.password_hash)
    return _redeem_invite(wb, username, password)


def list_voters(wb: Workbench) -> list[VoterAccount]:
    with wb.session() as s:
        return list(s.exec(select(VoterAccount).order_by(VoterAccount.username)))


def disable_voter(wb: Workbench, username: str) -> VoterAccount:
    with wb.session() as s:
        account = _get_account(s, username)
        if account is None:
            raise NotFound(f"no voter named {username!r}")
        account.disabled = True
        s.add(account)
        s.commit()
        s.refresh(account)
    return account


def list_invites(wb: Workbench) -> list[VoterInvite]:
    with wb.session() as s:
        return list(s.exec(select(VoterInvite).order_by(VoterInvite.id)))


# --- limits ----------------------------------------------------------------------------------


class RateLimiter:
    """At most ``per_minute`` hits per key in any sliding 60 s window (<= 0: unlimited).

    Each key keeps the times of its last ``per_minute`` hits, so its memory is bounded;
    keys idle for a whole window are dropped now and then.
    """

    SWEEP_EVERY = 1024  # hits between sweeps of idle keys

    def __init__(
        self, per_minute: int, clock: Callable[[], float] = time.monotonic, what: str = "messages"
    ) -> None:
        self.per_minute = int(per_minute)
        self.clock = clock
        self.what = what
        self._hits: dict[str, deque[float]] = {}
        self._lock = threading.Lock()
        self._since_sweep = 0

    def check(self, key: str) -> None:
        """Record a hit for ``key``, or raise RateLimited when its budget is spent."""
        if self.per_minute <= 0:
            return
        with self._lock:
            now = self.clock()
            hits = self._hits.get(key)
            if hits is None:
                hits = self._hits[key] = deque(maxlen=self.per_minute)
            while hits and hits[0] <= now - WINDOW_S:
                hits.popleft()
            if len(hits) >= self.per_minute:
                wait = max(1, math.ceil(hits[0] + WINDOW_S - now))
                raise RateLimited(f"too many {self.what}: try again in {wait} s")
            hits.append(now)
            self._since_sweep += 1
            if self._since_sweep >= self.SWEEP_EVERY:
                self._sweep(now)

    def refund(self, key: str) -> None:
        """Give back the last hit of ``key`` (the request it paid for was refused)."""
        with self._lock:
            hits = self._hits.get(key)
            if hits:
                hits.pop()

    def _sweep(self, now: float) -> None:
        self._since_sweep = 0
        idle = [k for k, hits in self._hits.items() if not hits or hits[-1] <= now - WINDOW_S]
        for k in idle:
            del self._hits[k]

    def keys(self) -> int:
        """How many keys are tracked (for tests and status pages)."""
        with self._lock:
            return len(self._hits)


class VoterLimits:
    """The arena limits for voters: message and vote rates, prompt length and turns.

    A limit of 0 or less means no limit.
    """

    def __init__(self, settings: Settings, clock: Callable[[], float] = time.monotonic) -> None:
        self.messages = RateLimiter(settings.voter_messages_per_minute, clock, what="messages")
        self.votes = RateLimiter(settings.voter_votes_per_minute, clock, what="votes")
        self.max_prompt_chars = settings.max_prompt_chars
        self.max_turns = settings.max_turns

    def check_prompt(self, prompt: str, turn_index: int) -> str:
        """The one check of a message's content, for everyone who sends one: returns it
        stripped, or raises InvalidInput. ``turn_index`` counts the turns before it."""
        text = (prompt or "").strip()
        if not text:
            raise InvalidInput("type a message first")
        if 0 < self.max_prompt_chars < len(text):
            raise InvalidInput(
                f"the message is too long ({len(text)} characters; the limit is {self.max_prompt_chars})"
            )
        if 0 < self.max_turns <= turn_index:
            raise InvalidInput(f"a conversation has at most {self.max_turns} turns: start a new one")
        return text


def voter_limits(wb: Workbench) -> VoterLimits:
    """The workbench's one set of voter budgets (shared by the UI, the voter app and the API)."""
    return wb.service(VoterLimits, lambda w: VoterLimits(w.settings))


@contextmanager
def _charged(limiter: RateLimiter | None, voter: str) -> Iterator[None]:
    """Take one hit from ``voter``'s budget for the block; a block that fails gives it back."""
    if limiter is None:
        yield
        return
    limiter.check(voter)
    try:
        yield
    except Exception:
        limiter.refund(voter)
        raise


@contextmanager
def admit_message(
    wb: Workbench, voter: str, prompt: str, turn_index: int, metered: bool = True
) -> Iterator[str]:
    """The one gate for a message to the arena's models (workbench UI, voter app, API); yields
    the checked prompt. The content is checked before ``voter`` is charged a message; when the
    block then fails (a vote missing, an engine refusing) the charge is refunded. Unmetered
    (the workbench's own user): the same checks, no budget."""
    limits = voter_limits(wb)
    text = limits.check_prompt(prompt, turn_index)
    with _charged(limits.messages if metered else None, voter):
        yield text


@contextmanager
def admit_vote(wb: Workbench, voter: str, metered: bool = True) -> Iterator[None]:
    """The one gate for a vote: charges ``voter`` one vote, refunded if the vote is refused."""
    with _charged(voter_limits(wb).votes if metered else None, voter):
        yield
