//! Joining a cluster.
//!
//! A new node proves it may join with a bootstrap token in kubeadm's form,
//! `<id>.<secret>`, handed to it by an operator together with the cluster
//! CA's fingerprint. [`token`] is the pure core of those tokens: parsing and
//! printing them, the record the replicated store keeps for each one (the
//! secret's SHA-256, never the secret), and the decision whether a presented
//! token is accepted now. It reads no clock and draws no randomness of its
//! own: callers pass `now` and a source of random bytes, so every rule can be
//! tested in memory.
//!
//! The handshake around it (CSR signing, the member list, rate limiting and
//! logging of refusals) lives in the agent, which stores records under
//! [`token::store_key`] and writes a used token back with compare-and-set so
//! two joins racing on the last use cannot both succeed.

pub mod token;
