import atexit
import os
import shutil
import tempfile

# A fresh query cache per test session, never one left by an earlier run (nor the user's own):
# stored variation answers from an older version of the code would hide a change in the maths.
# Set unconditionally (not setdefault) for the same reason; removed when the session ends.
_QUERY_CACHE = tempfile.mkdtemp(prefix="audit-test-queries-")
os.environ["AUDIT_CACHE_DIR"] = _QUERY_CACHE
atexit.register(shutil.rmtree, _QUERY_CACHE, True)
