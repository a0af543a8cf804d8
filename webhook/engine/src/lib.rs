//! Palisade's admission engine: pure and synchronous. An AdmissionReview
//! in, a decision out; a pod template in, policy findings out. Nothing
//! here serves, stores or talks to the apiserver, so `palisade inject` and
//! `palisade check` run on it alone and every decision is unit-tested.
#![forbid(unsafe_code)]

pub mod admission;
pub mod learn;
pub mod policy;
pub mod quantity;
pub mod rollout;
pub mod settings;
