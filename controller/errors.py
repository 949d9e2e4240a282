"""The root of controller/'s exceptions: every error meant for a person says what went wrong and
what to do, and the command line catches this one class (beside firmware_bridge's BridgeError and
profiles' ProfileError) to print it as one line.

    GivreError
    ├── ConfigError        the clinic config file (config.py)
    ├── RecordError        the record (records/store.py)
    │   ├── StoreUnavailable, RecordNotSaved
    │   ├── EventInvalid   a payload that does not fit its kind (records/events.py)
    │   ├── PatientUnknown no key for a patient id (records/store.py: givre records erase)
    │   ├── ChainBroken    (records/history.py: verified_sessions)
    │   ├── PhotoRefused   (records/photo.py: a symlink, a pipe, too large, not an image)
    │   └── ExportRefused  (practice/export.py)
    ├── PseudonymRefused   an id that looks like personal data (records/pseudonym.py)
    ├── UnsafeTarget       a health-data file's target is a symlink (records/private_files.py)
    ├── KeyStoreError      the patients' key store beside the record (records/keystore.py)
    ├── LedgerError        the cartridge ledger (records/ledger.py)
    ├── ProcedureError     a lesion's procedure (procedure/driver.py)
    │   └── StartRefused
    ├── DoseRefused        no dose within every limit (procedure/dose.py)
    ├── CalibrationError   a calibration step (device/calibration.py)
    ├── BillingError       the CCAM table or a billing choice (practice/billing.py)
    ├── FhirError          the FHIR export (practice/fhir.py)
    └── UsageError         a command-line value (cli/)
"""

from __future__ import annotations


class GivreError(Exception):
    """Base of every error controller/ raises for a person to read."""

    def __init__(self, problem: str, action: str = "") -> None:
        self.problem = problem
        self.action = action
        super().__init__(f"{problem}. {action}" if action else problem)


class RecordError(GivreError):
    """Base of the record's errors (records/store.py, records/events.py and the readers'): here so
    that the schema (records/events.py) and the store can both raise it without importing each other."""
