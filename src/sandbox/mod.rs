//! A local imitation of the Komfortkasse API v2 (work in progress).
