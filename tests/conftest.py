import os

os.environ.setdefault("AUDIT_CACHE_DIR", os.path.join(os.path.dirname(__file__), "..", ".pytest_cache", "audit-queries"))
