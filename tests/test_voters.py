import sys
import threading

import pytest
from sqlmodel import select

from app.arena import voters
from app.core.errors import Conflict, InvalidInput, NotFound, RateLimited
from app.core.settings import Settings
from app.core.tables import VoterAccount, VoterInvite


class FakeClock:
    def __init__(self, t: float = 1000.0) -> None:
        self.t = t

    def __call__(self) -> float:
        return self.t


def accounts(wb) -> dict[str, VoterAccount]:
    with wb.session() as s:
        return {a.username: a for a in s.exec(select(VoterAccount))}


def invite_row(wb, invite_id: int) -> VoterInvite:
    with wb.session() as s:
        return s.get(VoterInvite, invite_id)


# --- passwords -------------------------------------------------------------------------------


def test_password_hash_round_trip_and_format():
    stored = voters.hash_password("hunter2-secret")
    assert "hunter2-secret" not in stored
    iterations, salt_hex, hash_hex = stored.split("$")
    assert int(iterations) == voters.PBKDF2_ITERATIONS == 100_000
    assert len(bytes.fromhex(salt_hex)) == 16
    assert len(bytes.fromhex(hash_hex)) == 32
    assert voters.verify_password("hunter2-secret", stored)
    assert not voters.verify_password("hunter2-Secret", stored)
    assert not voters.verify_password("", stored)
    # A fresh salt each time: the same password never hashes the same way twice.
    assert voters.hash_password("hunter2-secret") != stored


def test_password_iterations_are_a_parameter_and_stored():
    stored = voters.hash_password("pw-123456", iterations=1000)
    assert stored.startswith("1000$")
    assert voters.verify_password("pw-123456", stored)
    # The iteration count is part of the hash: altering it breaks verification.
    assert not voters.verify_password("pw-123456", "1001" + stored[len("1000"):])


@pytest.mark.parametrize("stored", ["", "nonsense", "1000$zz$00", "x$00$00", "0$00$00", "1000$$", "1$2$3$4"])
def test_verify_password_rejects_malformed_hashes(stored):
    assert voters.verify_password("anything", stored) is False


# --- accounts --------------------------------------------------------------------------------


def test_create_voter_stores_a_hash_not_the_password(wb):
    account = voters.create_voter(wb, "alice", "s3cret-pw")
    assert account.id is not None and not account.disabled and account.invite_id is None
    stored = accounts(wb)["alice"]
    assert "s3cret-pw" not in stored.password_hash
    assert voters.verify_password("s3cret-pw", stored.password_hash)


def test_create_voter_duplicate_is_a_conflict(wb):
    voters.create_voter(wb, "alice", "s3cret-pw")
    with pytest.raises(Conflict, match="alice"):
        voters.create_voter(wb, "alice", "other-pw")
    assert len(accounts(wb)) == 1


@pytest.mark.parametrize("name", ["ab", "x" * 32, "a.b-c_d", "Bob_99"])
def test_create_voter_accepts_valid_names(wb, name):
    assert voters.create_voter(wb, name, "123456").username == name


@pytest.mark.parametrize("name", ["", "a", "x" * 33, "bad name", "semi;colon", "ünï", "a/b", "name\n"])
def test_create_voter_rejects_invalid_names(wb, name):
    with pytest.raises(InvalidInput, match="2 to 32"):
        voters.create_voter(wb, name, "123456")
    assert accounts(wb) == {}


def test_create_voter_rejects_short_passwords(wb):
    with pytest.raises(InvalidInput, match="6 characters"):
        voters.create_voter(wb, "alice", "12345")
    assert accounts(wb) == {}


def test_authenticate_right_wrong_unknown_and_invalid(wb):
    voters.create_voter(wb, "alice", "s3cret-pw")
    assert voters.authenticate(wb, "alice", "s3cret-pw") is True
    assert voters.authenticate(wb, "alice", "wrong-pw") is False
    assert voters.authenticate(wb, "alice", "") is False
    assert voters.authenticate(wb, "Alice", "s3cret-pw") is False
    assert voters.authenticate(wb, "nobody", "s3cret-pw") is False
    assert voters.authenticate(wb, "bad name", "s3cret-pw") is False
    assert voters.authenticate(wb, "", "") is False


def test_disabled_voter_cannot_sign_in(wb):
    voters.create_voter(wb, "alice", "s3cret-pw")
    voters.create_voter(wb, "bob", "bob-pw-1")
    account = voters.disable_voter(wb, "alice")
    assert account.disabled is True
    assert voters.authenticate(wb, "alice", "s3cret-pw") is False
    assert voters.authenticate(wb, "bob", "bob-pw-1") is True
    listed = voters.list_voters(wb)
    assert [(v.username, v.disabled) for v in listed] == [("alice", True), ("bob", False)]


def test_disable_unknown_voter_is_not_found(wb):
    with pytest.raises(NotFound):
        voters.disable_voter(wb, "ghost")


# --- invites ---------------------------------------------------------------------------------


def test_create_invite_makes_unique_codes(wb):
    invites = [voters.create_invite(wb, max_uses=2, note=f"batch {i}") for i in range(20)]
    codes = {i.code for i in invites}
    assert len(codes) == 20
    assert all(len(c) >= 12 for c in codes)
    listed = voters.list_invites(wb)
    assert [i.code for i in listed] == [i.code for i in invites]
    assert listed[3].note == "batch 3" and listed[3].max_uses == 2 and listed[3].uses == 0


@pytest.mark.parametrize("max_uses", [0, -1])
def test_create_invite_needs_a_use(wb, max_uses):
    with pytest.raises(InvalidInput):
        voters.create_invite(wb, max_uses=max_uses)
    assert voters.list_invites(wb) == []


def test_invite_redemption_creates_the_account_once(wb):
    invite = voters.create_invite(wb)
    assert voters.authenticate(wb, "alice", invite.code) is True
    made = accounts(wb)
    assert list(made) == ["alice"]
    assert made["alice"].invite_id == invite.id
    assert invite.code not in made["alice"].password_hash
    assert invite_row(wb, invite.id).uses == 1
    # Signing in again with the same name and code is a normal login, not a second use.
    assert voters.authenticate(wb, "alice", invite.code) is True
    assert voters.authenticate(wb, "alice", "not-the-code") is False
    assert len(accounts(wb)) == 1
    assert invite_row(wb, invite.id).uses == 1


def test_single_use_invite_refuses_a_second_name(wb):
    invite = voters.create_invite(wb, max_uses=1)
    assert voters.authenticate(wb, "alice", invite.code) is True
    assert voters.authenticate(wb, "bob", invite.code) is False
    assert list(accounts(wb)) == ["alice"]
    assert invite_row(wb, invite.id).uses == 1


def test_three_use_invite_admits_exactly_three_names(wb):
    invite = voters.create_invite(wb, max_uses=3)
    results = [voters.authenticate(wb, name, invite.code) for name in ("v1", "v2", "v3", "v4", "v5")]
    assert results == [True, True, True, False, False]
    assert sorted(accounts(wb)) == ["v1", "v2", "v3"]
    assert invite_row(wb, invite.id).uses == 3


def test_invite_does_not_take_over_an_existing_account(wb):
    voters.create_voter(wb, "alice", "s3cret-pw")
    invite = voters.create_invite(wb)
    assert voters.authenticate(wb, "alice", invite.code) is False
    assert invite_row(wb, invite.id).uses == 0
    assert voters.authenticate(wb, "alice", "s3cret-pw") is True


def test_invalid_name_does_not_use_an_invite(wb):
    invite = voters.create_invite(wb)
    assert voters.authenticate(wb, "bad name", invite.code) is False
    assert voters.authenticate(wb, "x", invite.code) is False
    assert invite_row(wb, invite.id).uses == 0
    assert accounts(wb) == {}


def test_unknown_code_and_disabled_invite_account(wb):
    invite = voters.create_invite(wb, max_uses=2)
    assert voters.authenticate(wb, "alice", invite.code + "x") is False
    assert voters.authenticate(wb, "alice", invite.code) is True
    voters.disable_voter(wb, "alice")
    assert voters.authenticate(wb, "alice", invite.code) is False
    assert invite_row(wb, invite.id).uses == 1


def _race(n: int, target) -> list:
    """Run ``target(i)`` in ``n`` threads released together; return their results."""
    barrier = threading.Barrier(n)
    results: list = [None] * n
    errors: list[BaseException] = []

    def run(i: int) -> None:
        try:
            barrier.wait()
            results[i] = target(i)
        except BaseException as exc:  # reported by the test
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not any(t.is_alive() for t in threads)
    assert errors == []
    return results


def test_concurrent_redemptions_never_exceed_max_uses(wb):
    invite = voters.create_invite(wb, max_uses=5)
    results = _race(20, lambda i: voters.authenticate(wb, f"voter{i:02d}", invite.code))
    assert results.count(True) == 5 and results.count(False) == 15
    made = accounts(wb)
    assert len(made) == 5
    assert all(a.invite_id == invite.id for a in made.values())
    assert sorted(made) == sorted(f"voter{i:02d}" for i, ok in enumerate(results) if ok)
    assert invite_row(wb, invite.id).uses == 5


def test_concurrent_redemptions_of_one_name_use_the_invite_once(wb):
    invite = voters.create_invite(wb, max_uses=5)
    results = _race(8, lambda i: voters.authenticate(wb, "alice", invite.code))
    assert results == [True] * 8
    assert list(accounts(wb)) == ["alice"]
    assert invite_row(wb, invite.id).uses == 1


def test_concurrent_redemptions_of_one_name_with_two_codes(wb):
    first, second = voters.create_invite(wb, max_uses=5), voters.create_invite(wb, max_uses=5)
    codes = [first.code, second.code] * 4
    results = _race(8, lambda i: voters.authenticate(wb, "alice", codes[i]))
    made = accounts(wb)
    assert list(made) == ["alice"]
    winner = first if made["alice"].invite_id == first.id else second
    # Only the code that made the account signs in; the other invite keeps its uses.
    assert results == [code == winner.code for code in codes]
    assert invite_row(wb, first.id).uses + invite_row(wb, second.id).uses == 1
    assert invite_row(wb, winner.id).uses == 1


# --- rate limits -----------------------------------------------------------------------------


def test_rate_limiter_allows_n_per_window_then_names_the_wait():
    clock = FakeClock()
    limiter = voters.RateLimiter(3, clock=clock)
    for dt in (0, 10, 20):
        clock.t = 1000 + dt
        limiter.check("alice")
    clock.t = 1030
    with pytest.raises(RateLimited, match=r"^too many messages: try again in 30 s$"):
        limiter.check("alice")
    clock.t = 1035.5  # waits are rounded up to whole seconds
    with pytest.raises(RateLimited, match=r"try again in 25 s$"):
        limiter.check("alice")
    clock.t = 1059.5
    with pytest.raises(RateLimited, match=r"try again in 1 s$"):
        limiter.check("alice")
    # The first hit leaves the window at 1060; refused attempts did not count.
    clock.t = 1060
    limiter.check("alice")
    with pytest.raises(RateLimited, match=r"try again in 10 s$"):
        limiter.check("alice")
    clock.t = 1070
    limiter.check("alice")


def test_rate_limiter_keys_are_independent():
    clock = FakeClock()
    limiter = voters.RateLimiter(2, clock=clock)
    limiter.check("alice")
    limiter.check("alice")
    with pytest.raises(RateLimited):
        limiter.check("alice")
    limiter.check("bob")
    limiter.check("bob")
    with pytest.raises(RateLimited):
        limiter.check("bob")


@pytest.mark.parametrize("per_minute", [0, -5])
def test_rate_limiter_unlimited(per_minute):
    limiter = voters.RateLimiter(per_minute, clock=FakeClock())
    for _ in range(1000):
        limiter.check("alice")
    assert limiter.keys() == 0


def test_rate_limiter_memory_is_bounded():
    clock = FakeClock()
    limiter = voters.RateLimiter(2, clock=clock)
    limiter.SWEEP_EVERY = 11
    for key in ["k0"] + [f"k{i}" for i in range(9)]:  # 10 recorded hits
        limiter.check(key)
    for _ in range(50):
        with pytest.raises(RateLimited):
            limiter.check("k0")
    assert len(limiter._hits["k0"]) == 2
    assert limiter.keys() == 9
    clock.t += 61
    limiter.check("fresh")  # the 11th recorded hit sweeps the keys idle for a window
    assert limiter.keys() == 1


def test_rate_limiter_is_thread_safe():
    unlocked_reads: list[float] = []

    class LockCheckingClock(FakeClock):
        """Notes every read made outside the limiter's lock (the window check must hold it)."""

        limiter: voters.RateLimiter | None = None

        def __call__(self) -> float:
            if self.limiter is not None and not self.limiter._lock.locked():
                unlocked_reads.append(self.t)
            return self.t

    def hammer(limiter: voters.RateLimiter) -> int:
        ok = 0
        for _ in range(50):
            try:
                limiter.check("shared")
                ok += 1
            except RateLimited:
                pass
        return ok

    old = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads often
    try:
        for _ in range(10):
            clock = LockCheckingClock()
            limiter = clock.limiter = voters.RateLimiter(100, clock=clock)
            assert sum(_race(8, lambda _i, lim=limiter: hammer(lim))) == 100
    finally:
        sys.setswitchinterval(old)
    assert unlocked_reads == []


def test_voter_limits_rates_from_settings(tmp_path):
    clock = FakeClock()
    limits = voters.VoterLimits(
        Settings(home=tmp_path, voter_messages_per_minute=2, voter_votes_per_minute=3), clock=clock
    )
    for _ in range(2):
        limits.messages.check("alice")
    with pytest.raises(RateLimited, match="too many messages"):
        limits.messages.check("alice")
    for _ in range(3):
        limits.votes.check("alice")
    with pytest.raises(RateLimited, match="too many votes: try again in 60 s"):
        limits.votes.check("alice")
    clock.t += 60
    limits.messages.check("alice")
    limits.votes.check("alice")


def test_voter_limits_defaults_follow_the_workbench_settings(wb):
    limits = voters.VoterLimits(wb.settings)
    assert limits.messages.per_minute == wb.settings.voter_messages_per_minute
    assert limits.votes.per_minute == wb.settings.voter_votes_per_minute
    assert limits.max_prompt_chars == wb.settings.max_prompt_chars
    assert limits.max_turns == wb.settings.max_turns


def test_voter_limits_prompt_length_and_turns(tmp_path):
    limits = voters.VoterLimits(Settings(home=tmp_path, max_prompt_chars=10, max_turns=2))
    limits.check_prompt("x" * 10, 0)
    limits.check_prompt("hi", 1)
    with pytest.raises(InvalidInput, match="too long"):
        limits.check_prompt("x" * 11, 0)
    with pytest.raises(InvalidInput, match="2 turns"):
        limits.check_prompt("hi", 2)
    with pytest.raises(InvalidInput, match="2 turns"):
        limits.check_prompt("hi", 7)


def test_voter_limits_zero_means_no_prompt_or_turn_limit(tmp_path):
    limits = voters.VoterLimits(Settings(home=tmp_path, max_prompt_chars=0, max_turns=0))
    limits.check_prompt("x" * 100_000, 1000)


def test_names_the_workbench_votes_under_are_reserved(wb):
    invite = voters.create_invite(wb, max_uses=5)
    for name in ("api", "API", "local"):
        with pytest.raises(InvalidInput, match="reserved"):
            voters.create_voter(wb, name, "secret-pass")
        assert voters.authenticate(wb, name, invite.code) is False  # no account made from an invite
    assert voters.list_voters(wb) == []
