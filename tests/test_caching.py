from __future__ import annotations

import os
import select
import signal
import threading
import time

import pytest

from calltelemetry.caching import BoundedCache, caches_clear


def test_it_keeps_at_most_max_entries_dropping_the_least_recently_used() -> None:
    dropped: list[str] = []
    cache: BoundedCache[int, str] = BoundedCache(max_entries=2, on_evict=dropped.append)
    cache.set(1, "one")
    cache.set(2, "two")
    assert cache.get(1) == "one"  # 2 is now the least recently used
    cache.set(3, "three")
    assert len(cache) == 2
    assert (cache.get(1), cache.get(2), cache.get(3)) == ("one", None, "three")
    assert dropped == ["two"]


def test_it_forgets_a_value_older_than_max_age() -> None:
    dropped: list[str] = []
    cache: BoundedCache[str, str] = BoundedCache(
        max_entries=4, max_age=0.05, on_evict=dropped.append
    )
    cache.set("a", "kept briefly")
    cache.set("b", "kept longer", max_age=60)
    assert cache.get("a") == "kept briefly"
    time.sleep(0.1)
    assert cache.get("a") is None
    assert cache.get("b") == "kept longer"
    assert dropped == ["kept briefly"] and len(cache) == 1


def test_setdefault_keeps_the_first_value_and_replacing_one_evicts_the_old() -> None:
    dropped: list[str] = []
    cache: BoundedCache[str, str] = BoundedCache(max_entries=4, on_evict=dropped.append)
    assert cache.setdefault("k", "first") == "first"
    assert cache.setdefault("k", "second") == "first"
    assert dropped == []
    cache.set("k", "third")
    assert cache.get("k") == "third" and dropped == ["first"]


def test_it_stays_bounded_and_loses_nothing_under_concurrent_use() -> None:
    evicted: list[tuple[int, int]] = []
    cache: BoundedCache[int, tuple[int, int]] = BoundedCache(
        max_entries=50, on_evict=evicted.append
    )
    errors: list[BaseException] = []

    def hammer(thread: int) -> None:
        try:
            for n in range(2000):
                key = (thread * 7 + n) % 120
                value = cache.get(key)
                assert value is None or (value[0] * 7 + value[1]) % 120 == key
                cache.set(key, (thread, n))
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert len(cache) == 50
    kept = [value for key in range(120) if (value := cache.get(key)) is not None]
    # Every value put in is either still kept or was handed to on_evict, exactly once.
    assert sorted(evicted + kept) == sorted((t, n) for t in range(8) for n in range(2000))


def test_caches_clear_empties_every_cache_and_closes_what_it_holds() -> None:
    dropped: list[str] = []
    first: BoundedCache[str, str] = BoundedCache(max_entries=4, on_evict=dropped.append)
    second: BoundedCache[str, str] = BoundedCache(max_entries=4, max_age=60)
    first.set("a", "pool")
    second.set("b", "value")
    caches_clear()
    assert (len(first), len(second)) == (0, 0)
    assert dropped == ["pool"]


def test_caches_clear_reaches_the_product_caches() -> None:
    from licensing import selectors
    from webhooks import delivery, http, payload, trigger

    caches = [
        http._pools,
        http._targets,
        delivery._webhooks,
        trigger._compiled,
        trigger._sequence,
        payload._renderers,
        selectors._cache,
    ]
    pool = http.GuardedHTTPPool("127.0.0.1", 9)
    for n, cache in enumerate(caches):
        assert isinstance(cache, BoundedCache)
        cache.set(f"test {n}", pool)  # type: ignore[arg-type]
    caches_clear()
    assert [len(cache) for cache in caches] == [0] * len(caches)
    assert pool.pool is None  # closed: an evicted pool's connections are closed


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_starts_without_the_parents_sockets_and_can_use_every_cache() -> None:
    closed: list[str] = []
    sockets: BoundedCache[str, str] = BoundedCache(
        max_entries=4, on_evict=closed.append, clear_in_child=True
    )
    plain: BoundedCache[str, str] = BoundedCache(max_entries=4)
    sockets.set("k", "parent's socket")
    plain.set("k", "parent's value")
    # A thread holds the lock while the process forks: the child must not inherit it held.
    held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with plain._lock:
            held.set()
            release.wait(5)

    holder = threading.Thread(target=hold)
    holder.start()
    held.wait(5)
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report, then leave without running the parent's cleanup
        try:
            plain.set("child", "ok")
            report = f"{sockets.get('k')}|{plain.get('k')}|{closed}|{plain.get('child')}"
        except BaseException as exc:
            report = repr(exc)
        os.write(write, report.encode())
        os._exit(0)
    os.close(write)
    release.set()
    holder.join()
    ready, _, _ = select.select([read], [], [], 10)
    if not ready:  # the child is stuck on the lock it inherited held
        os.kill(pid, signal.SIGKILL)
    with os.fdopen(read) as pipe:
        report = pipe.read() if ready else "child deadlocked"
    os.waitpid(pid, 0)
    assert report == "None|parent's value|[]|ok"
    assert sockets.get("k") == "parent's socket"  # the parent keeps its own
