//! What the benchmarks compare Palisade with ([`floor_review`]) and feed it
//! ([`learn`]: simulated observations and allowlists).

pub mod learn;

use kube::core::admission::{AdmissionRequest, AdmissionResponse, AdmissionReview};
use kube::core::DynamicObject;

/// The floor: what a minimal kube-rs webhook does with a review and no
/// decision - parse the AdmissionReview with kube's types, and serialise an
/// allowing response. Any webhook written with kube pays at least this.
pub fn floor_review(body: &[u8]) -> Vec<u8> {
    let parsed: Result<AdmissionRequest<DynamicObject>, String> =
        serde_json::from_slice::<AdmissionReview<DynamicObject>>(body)
            .map_err(|e| e.to_string())
            .and_then(|review| review.try_into().map_err(|e| format!("{e}")));
    match parsed {
        Ok(request) => {
            let review = AdmissionResponse::from(&request).into_review();
            serde_json::to_vec(&review).unwrap_or_default()
        }
        Err(e) => e.into_bytes(),
    }
}
