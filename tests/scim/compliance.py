"""Run the scim2-tester compliance checks against a running Portcullis.

Usage: compliance.py BASE_URL TOKEN

Prints every check that did not pass, then `N passed, M failed`
(deviations from SHOULDs are reported and counted as passed; errors and
critical findings fail; skipped checks are listed with the reason).
Exits 1 if any check failed.
"""

import sys

import httpx2
from scim2_client.engines.httpx2 import SyncSCIMClient
from scim2_tester import Status, check_server

PASS = {Status.SUCCESS, Status.COMPLIANT, Status.ACCEPTABLE, Status.DEVIATION}
FAIL = {Status.ERROR, Status.CRITICAL}


def main() -> int:
    base, token = sys.argv[1], sys.argv[2]
    http = httpx2.Client(base_url=base, headers={"Authorization": f"Bearer {token}"}, timeout=30)
    results = check_server(SyncSCIMClient(http))
    passed = failed = 0
    for r in results:
        where = f"[{r.resource_type}] " if r.resource_type else ""
        if r.status in FAIL:
            failed += 1
            print(f"FAIL {where}{r.title}: {r.reason}")
        elif r.status == Status.SKIPPED:
            print(f"skip {where}{r.title}: {r.reason}")
        else:
            passed += 1
            if r.status == Status.DEVIATION:
                print(f"note {where}{r.title}: {r.reason}")
    print(f"{passed} passed, {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
