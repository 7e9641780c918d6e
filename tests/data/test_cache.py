from isloader.data.cache import ByteLRU


def test_byte_budget_is_kept_and_recent_entries_stay() -> None:
    cache = ByteLRU(100)
    for i in range(20):
        cache.put(i, f"v{i}", 10)
        assert cache.nbytes <= 100
    assert cache.get(19) == "v19"
    assert cache.get(0) is None
    cache.put("huge", "x", 101)  # larger than the whole budget: not cached
    assert cache.get("huge") is None


def test_a_stream_of_one_off_reads_does_not_evict_the_hot_set() -> None:
    cache = ByteLRU(100, protected_share=0.6)
    for key in ("hot1", "hot2", "hot3"):
        cache.put(key, key, 10)
        assert cache.get(key) == key  # second touch: protected
    for i in range(100):  # cold reads, each seen once
        cache.put(("cold", i), i, 10)
    assert [cache.get(k) for k in ("hot1", "hot2", "hot3")] == ["hot1", "hot2", "hot3"]
    assert cache.nbytes <= 100


def test_replacing_a_key_keeps_the_byte_count_exact() -> None:
    cache = ByteLRU(100)
    cache.put("a", 1, 30)
    cache.get("a")
    cache.put("a", 2, 50)
    assert cache.get("a") == 2
    assert cache.nbytes == 50
