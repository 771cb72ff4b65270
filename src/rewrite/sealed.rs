//! The display of a card envelope in a response: decrypted under an
//! audited grant, otherwise its last four once it verifies; a damaged or
//! forged envelope shows nothing of itself. Shared by the JSON and CSV
//! rewriters.

use super::mask::{envelope_view, masked_envelope, DAMAGED_ENVELOPE_MASK};
use super::{Counts, OpenError, RewriteSpec};
use crate::class::{Action, FieldClass};

/// Writes into `out` the display of a card envelope of `class` under
/// `action` (which is not `clear`: a clear envelope is shown as it is), the
/// same way the JSON rewriter does: decrypted with a grant, otherwise masked
/// to its public last four once the envelope verifies (when the keyring is
/// present); a damaged or forged envelope shows nothing of itself.
/// `account` is the id of the record the envelope is in, if known.
pub(crate) fn envelope_display(
    spec: &RewriteSpec,
    text: &str,
    class: FieldClass,
    action: Action,
    account: Option<&str>,
    counts: &mut Counts,
    out: &mut String,
) {
    let damaged = |counts: &mut Counts, out: &mut String| {
        counts.integrity_errors += 1;
        counts.add(class, Action::Last4);
        out.push_str(DAMAGED_ENVELOPE_MASK);
    };
    let Some(view) = envelope_view(text) else {
        return damaged(counts, out);
    };
    // Masked display: the last four are shown only when the envelope
    // authenticates, or when no keyring is there to check it. One under a
    // key that no longer opens anything cannot be checked and is shown.
    let masked = |counts: &mut Counts, out: &mut String| match spec
        .opener
        .as_ref()
        .map(|o| o.verify(class, text, account))
    {
        None | Some(Ok(())) | Some(Err(OpenError::UnknownKey)) => {
            counts.add(class, Action::Last4);
            masked_envelope(&view, out);
        }
        Some(Err(_)) => damaged(counts, out),
    };
    match action {
        Action::Decrypt => match spec.opener.as_ref().map(|o| o.open(class, text, account)) {
            Some(Ok(plain)) => {
                counts.add(class, Action::Decrypt);
                out.push_str(&plain);
            }
            Some(Err(OpenError::NotAllowed)) | None => masked(counts, out),
            Some(Err(OpenError::UnknownKey)) => {
                counts.integrity_errors += 1;
                counts.add(class, Action::Last4);
                masked_envelope(&view, out);
            }
            Some(Err(_)) => damaged(counts, out),
        },
        Action::Redact | Action::Remove => {
            counts.add(class, Action::Redact);
            out.push_str(spec.rules.redact_token());
        }
        Action::Last4 | Action::Clear => masked(counts, out),
    }
}
