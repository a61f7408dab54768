"""Post-apply verification: prove, on the live store, that a stack's keys work as declared.

    report = verify_stack(load_valid_stack(paths), backend)   # KMS calls as backend.principal
    assert report.ok, [c.evidence for c in report.failed]

Where `plan` and `drift` compare attributes, verify exercises them: rotation and replicas as the
KMS API reports them, data keys that round-trip in every region, encryption contexts that bind,
signatures and MACs that verify, `expect:` access claims proved with the who-can analysis, and
every call it made found in the audit log. It creates nothing: no key, grant or alias.
See docs/verify.md.
"""

from kmsplan.verify.model import CHECK_NAMES, FORMAT_VERSION, Check, Report
from kmsplan.verify.runner import verify_stack

__all__ = ["CHECK_NAMES", "FORMAT_VERSION", "Check", "Report", "verify_stack"]
