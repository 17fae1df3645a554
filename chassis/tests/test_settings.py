from chassis.settings import _shifted_redis_db


def test_test_runs_use_a_redis_database_apart_from_the_lab():
    """Ensure a test run's Redis database is shifted away from the running lab's."""
    assert _shifted_redis_db("redis://127.0.0.1:6379/1", 8) == "redis://127.0.0.1:6379/9"
    assert _shifted_redis_db("redis://127.0.0.1:6379", 8) == "redis://127.0.0.1:6379/8"
    assert _shifted_redis_db("redis://:pw@redis:6379/10", 8) == "redis://:pw@redis:6379/2"
