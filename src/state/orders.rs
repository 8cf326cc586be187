//! Per-order state: fingerprints, statuses, errors.
