"""The one list of API roles, and which of them read or write.

A leaf (it imports nothing) so the CLI's ``--role`` choice can use it without loading
Flask; :mod:`archiver.auth` re-exports it, and token creation, every route's
``require()`` and the OpenAPI document's ``x-roles`` all come from here.
"""

from __future__ import annotations

ROLES = ("admin", "ingest", "compliance", "auditor", "legal")
# Who reads message content (records, search hits, conversations), by API token or console
# session alike: not admin, who runs the archive (users, policies, settings) but reads no
# messages; legal only within its matters' holds when it is a console user (archiver.console.scope).
READERS = ("compliance", "auditor", "legal")
# Who reads the archive's counts, chain tip, jobs and index lag (no content): the readers and admin.
STATS_READERS = (*READERS, "admin")
WRITERS = ("ingest", "admin")  # post to the capture and consent APIs
# Who lists the audit trail and the quarantine: oversight of the archive itself, not case work
# (legal reads records and searches) nor intake (ingest).
OVERSIGHT = ("compliance", "auditor", "admin")
# Who creates matters and litigation holds, lists them and releases them (case work).
HOLDERS = ("legal", "admin")
# Who reviews disposition: approves or rejects batches of review classes (records management).
REVIEWERS = ("compliance", "admin")
# Who erases a person's data (GDPR Art. 17): the compliance officer alone.
ERASERS = ("compliance",)
# Who extends the retention of sealed records of a class (records management, like review).
RETAINERS = ("compliance", "admin")
# Who looks up a person: her identifiers, records count and the holds covering her.
CONTACT_VIEWERS = ("compliance", "legal", "auditor")
# Who takes provable exports out of the archive (legal: by hold only until tokens carry matters).
EXPORTERS = ("compliance", "auditor", "legal")
# Who writes the signed reports (archiver.reports): oversight, and legal for the holds report only.
REPORTERS = ("compliance", "auditor", "legal")
# Who may have a console account: people, not machines (ingest is a CRM's token).
CONSOLE_ROLES = ("admin", "compliance", "auditor", "legal")
