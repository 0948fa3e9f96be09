//! The integration tests of `runnel-server` (`tests/`), run over the embedded backend as the
//! binary runs it by default. They live in a crate of their own because the server is given its
//! backend by the composition root and names no storage crate, not even to test itself.
