//! The files as written: serde structs that keep every value's span, strict
//! about unknown keys at every level.
//!
//! serde stops at the first error, but a file should report all of its
//! errors. So the named entries (each class, route, role, principal and each
//! gateway section) are [`Lenient`]: an entry that fails to deserialize is
//! kept as [`Lenient::Failed`] and the rest of the file is still read. Each
//! failed entry is then deserialized again on its own by a *focus* pass that
//! skips everything else; its error carries the exact span of the problem.

use std::collections::BTreeMap;
use std::fmt;
use std::marker::PhantomData;

use serde::de::{
    self, DeserializeOwned, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor,
};
use serde::{Deserialize, Deserializer};
use toml::Spanned;

use super::error::{Diag, Source};

/// A value that may have failed to deserialize.
#[derive(Debug)]
pub(crate) enum Lenient<T> {
    /// It deserialized.
    Ok(T),
    /// It did not; the error is found again by a focus pass.
    Failed(String),
}

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Lenient<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        Ok(match T::deserialize(d) {
            Ok(v) => Lenient::Ok(v),
            Err(e) => Lenient::Failed(e.to_string()),
        })
    }
}

impl<T> Lenient<T> {
    /// The value, if it deserialized.
    pub fn into_option(self) -> Option<T> {
        match self {
            Lenient::Ok(v) => Some(v),
            Lenient::Failed(_) => None,
        }
    }
}

/// A table of named entries (`[roles.NAME]`), in the order they appear.
#[derive(Debug)]
pub(crate) struct Named<T>(pub Vec<(Spanned<String>, Lenient<T>)>);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Named<T> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let map: BTreeMap<Spanned<String>, Lenient<T>> = BTreeMap::deserialize(d)?;
        let mut entries: Vec<_> = map.into_iter().collect();
        entries.sort_by_key(|(k, _)| k.span().start);
        Ok(Named(entries))
    }
}

// ---------------------------------------------------------------- gateway

/// The gateway config file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGateway {
    pub server: Option<Lenient<RawServer>>,
    pub upstream: Option<Lenient<RawUpstream>>,
    pub limits: Option<Lenient<RawLimits>>,
    pub log: Option<Lenient<RawLog>>,
    pub data: Option<Lenient<RawData>>,
    pub policy: Option<Lenient<RawPolicyFiles>>,
    pub crypto: Option<Lenient<RawCrypto>>,
    pub audit: Option<Lenient<RawAudit>>,
    pub lockout: Option<Lenient<RawLockout>>,
    pub state: Option<Lenient<RawState>>,
}

/// `[lockout]`: failed authentications that lock an identity.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLockout {
    pub max_failures: Option<Spanned<u64>>,
    pub window_secs: Option<Spanned<u64>>,
    pub lock_secs: Option<Spanned<u64>>,
}

/// `[state]`: where lockouts, freezes and budget counters are kept.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawState {
    pub backend: Option<Spanned<String>>,
    /// `[state] url`: the PostgreSQL connection string (postgres backend).
    pub url: Option<Spanned<String>>,
    /// `[state] ca`: a CA bundle (PEM); set, the connection uses TLS.
    pub ca: Option<Spanned<String>>,
    pub pool_size: Option<Spanned<u64>>,
    pub connect_timeout_ms: Option<Spanned<u64>>,
    pub statement_timeout_ms: Option<Spanned<u64>>,
    /// `serve_masked` (default) or `refuse`.
    pub on_unavailable: Option<Spanned<String>>,
}

/// `[crypto]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawCrypto {
    pub keyring: Spanned<String>,
    pub kek_file: Option<Spanned<String>>,
    pub kek_env: Option<Spanned<String>>,
    pub encrypt_classes: Option<Vec<Spanned<String>>>,
    pub blind_index_classes: Option<Vec<Spanned<String>>>,
    pub encrypt_detected_cards: Option<bool>,
}

/// `[audit]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAudit {
    pub dir: Option<Spanned<String>>,
    pub signing_key: Spanned<String>,
    pub checkpoint_every_records: Option<Spanned<u64>>,
    pub checkpoint_every_secs: Option<Spanned<u64>>,
    pub rotate_bytes: Option<Spanned<u64>>,
    /// A directory outside `dir` (another disk) keeping the newest checkpoint.
    pub witness_dir: Option<Spanned<String>>,
}

/// `[server]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawServer {
    pub listen: Spanned<String>,
    pub cert: Spanned<String>,
    pub key: Spanned<String>,
    pub client_ca: Option<Spanned<String>>,
    pub server_names: Option<Vec<Spanned<String>>>,
    pub shutdown_grace_secs: Option<Spanned<u64>>,
    pub client_crl: Option<Spanned<String>>,
    pub trusted_proxies: Option<Vec<Spanned<String>>>,
}

/// `[upstream]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUpstream {
    pub url: Spanned<String>,
    pub ca: Option<Spanned<String>>,
    pub connect_timeout_ms: Option<Spanned<u64>>,
    pub response_timeout_ms: Option<Spanned<u64>>,
    pub pool_max_idle_per_host: Option<Spanned<u64>>,
    pub client_cert_headers: Option<RawClientCertHeaders>,
}

/// `[upstream.client_cert_headers]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClientCertHeaders {
    pub verify: Option<Spanned<String>>,
    pub subject: Option<Spanned<String>>,
    pub serial: Option<Spanned<String>>,
}

/// `[limits]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLimits {
    pub max_request_body_bytes: Option<Spanned<u64>>,
    pub max_response_body_bytes: Option<Spanned<u64>>,
    pub max_json_depth: Option<Spanned<u64>>,
    pub max_token_bytes: Option<Spanned<u64>>,
    pub max_decompressed_bytes: Option<Spanned<u64>>,
    pub max_decompression_ratio: Option<Spanned<u64>>,
    pub request_timeout_secs: Option<Spanned<u64>>,
    pub max_connections: Option<Spanned<u64>>,
    pub max_header_count: Option<Spanned<u64>>,
    pub max_header_bytes: Option<Spanned<u64>>,
    pub header_timeout_secs: Option<Spanned<u64>>,
    pub idle_timeout_secs: Option<Spanned<u64>>,
    pub handshake_timeout_secs: Option<Spanned<u64>>,
    pub h2_max_concurrent_streams: Option<Spanned<u64>>,
    pub h2_max_pending_reset_streams: Option<Spanned<u64>>,
    pub h2_max_local_reset_streams: Option<Spanned<u64>>,
}

/// `[log]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawLog {
    pub format: Option<Spanned<String>>,
    pub level: Option<Spanned<String>>,
}

/// `[data]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawData {
    pub dir: Option<Spanned<String>>,
}

/// `[policy]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicyFiles {
    pub files: Spanned<Vec<Spanned<String>>>,
}

// ---------------------------------------------------------------- policy

/// One policy file.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPolicyFile {
    pub redact_token: Option<Spanned<String>>,
    pub records: Option<Lenient<Spanned<RawRecords>>>,
    pub classes: Option<Named<RawClass>>,
    pub routes: Option<Named<RawRoute>>,
    pub roles: Option<Named<RawRole>>,
    pub principals: Option<Vec<Lenient<RawPrincipal>>>,
    pub grants: Option<Lenient<Spanned<RawGrantPolicy>>>,
    pub revocations: Option<Lenient<Spanned<RawRevocations>>>,
    pub admit: Option<Lenient<Spanned<RawAdmit>>>,
    pub vocabulary: Option<Spanned<RawVocabulary>>,
    pub identifiers: Option<Spanned<RawIdentifiers>>,
}

/// `[vocabulary]`: how field names are read as words.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawVocabulary {
    /// Canonical word → other spellings of it.
    pub synonyms: Option<BTreeMap<Spanned<String>, Vec<Spanned<String>>>>,
    pub qualifiers: Option<Vec<Spanned<String>>>,
    pub owner_words: Option<Vec<Spanned<String>>>,
    pub generic_values: Option<Vec<Spanned<String>>>,
    pub descriptors: Option<Vec<Spanned<String>>>,
}

/// `[identifiers]`: the utility's own identifier fields, never taken for
/// red-flag values by their words.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawIdentifiers {
    pub names: Vec<Spanned<String>>,
}

/// `[revocations]`: refused at once. The key hashes are any TOML value,
/// checked by hand so that no error message repeats one.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRevocations {
    pub principals: Option<Vec<Spanned<String>>>,
    pub api_key_sha256: Option<Spanned<RawKeyList>>,
    pub cert_serials: Option<Vec<Spanned<String>>>,
    pub certs: Option<Vec<Spanned<RawRevokedCert>>>,
}

/// `[[revocations.certs]]`: a certificate named by its issuer and serial.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRevokedCert {
    pub issuer: String,
    pub serial: String,
}

/// A list of API key hashes. Anything but a list is [`RawKeyList::NotList`],
/// so that no serde message repeats a hash written in the wrong place.
#[derive(Debug)]
pub(crate) enum RawKeyList {
    /// `["9f86…", …]`: each element any TOML value, checked by hand.
    List(Vec<Spanned<toml::Value>>),
    /// Something else.
    NotList,
}

impl<'de> Deserialize<'de> for RawKeyList {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawKeyList;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a list of hexadecimal SHA-256 strings")
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawKeyList, A::Error> {
                let mut list = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<toml::Value>>()? {
                    list.push(item);
                }
                Ok(RawKeyList::List(list))
            }
            fn visit_str<E: de::Error>(self, _: &str) -> Result<RawKeyList, E> {
                Ok(RawKeyList::NotList)
            }
            fn visit_i64<E: de::Error>(self, _: i64) -> Result<RawKeyList, E> {
                Ok(RawKeyList::NotList)
            }
            fn visit_u64<E: de::Error>(self, _: u64) -> Result<RawKeyList, E> {
                Ok(RawKeyList::NotList)
            }
            fn visit_f64<E: de::Error>(self, _: f64) -> Result<RawKeyList, E> {
                Ok(RawKeyList::NotList)
            }
            fn visit_bool<E: de::Error>(self, _: bool) -> Result<RawKeyList, E> {
                Ok(RawKeyList::NotList)
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawKeyList, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(RawKeyList::NotList)
            }
        }
        d.deserialize_any(V)
    }
}

/// `[admit]`: policy-wide admission settings.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawAdmit {
    pub budget_tz: Option<Spanned<String>>,
    pub freeze_role: Option<Spanned<String>>,
    pub metrics_roles: Option<Vec<Spanned<String>>>,
}

/// `[grants]`: the limits and roles of decrypt grants.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGrantPolicy {
    pub max_validity_minutes: Option<Spanned<u64>>,
    pub max_uses: Option<Spanned<u64>>,
    pub approver_role: Option<Spanned<String>>,
    pub grantee_role: Option<Spanned<String>>,
}

/// `[records]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRecords {
    pub paths: Vec<Spanned<String>>,
}

/// `[classes.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawClass {
    pub names: Option<Vec<Spanned<String>>>,
    pub paths: Option<Vec<Spanned<String>>>,
    pub words: Option<Vec<Spanned<String>>>,
    pub whole_words: Option<Vec<Spanned<String>>>,
    pub ambiguous: Option<Vec<Spanned<String>>>,
    pub containers: Option<Vec<Spanned<String>>>,
}

/// `[routes.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRoute {
    pub path: Spanned<String>,
    pub red_flag: Option<bool>,
    pub export: Option<bool>,
    pub passthrough_types: Option<Vec<Spanned<String>>>,
    pub page_param: Option<Spanned<String>>,
    pub max_page_size: Option<Spanned<u64>>,
}

/// `[roles.NAME]`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRole {
    pub description: Option<String>,
    pub routes: Option<Vec<RawGrant>>,
    pub detectors: Option<Spanned<RawDetectors>>,
    pub allow_fields: Option<Vec<Spanned<String>>>,
    pub allowlist: Option<Spanned<bool>>,
    pub actions: Option<BTreeMap<Spanned<String>, Spanned<String>>>,
    pub unmask: Option<Spanned<RawUnmask>>,
    pub rate: Option<Spanned<RawRate>>,
    pub role_rate: Option<Spanned<RawRate>>,
    pub route_rates: Option<BTreeMap<Spanned<String>, Spanned<RawRouteRate>>>,
    pub record_budget_per_day: Option<Spanned<u64>>,
    pub may_export: Option<Spanned<bool>>,
    pub may_search_cards: Option<Spanned<bool>>,
    pub card_search_rate: Option<Spanned<RawRate>>,
}

/// A rate limit: `{ per_second = 20, burst = 40 }` (or `per_minute`).
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRate {
    pub per_second: Option<Spanned<u64>>,
    pub per_minute: Option<Spanned<u64>>,
    pub burst: Option<Spanned<u64>>,
}

/// `[roles.NAME.route_rates.ROUTE]`: a route's own limits in a role.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawRouteRate {
    pub rate: Option<Spanned<RawRate>>,
    pub role_rate: Option<Spanned<RawRate>>,
}

/// `[roles.NAME.unmask]`: what the role may ask to see in the clear.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawUnmask {
    pub classes: Vec<Spanned<String>>,
    pub routes: Vec<Spanned<String>>,
    pub reason_min_len: Option<Spanned<u64>>,
    pub reason_pattern: Option<Spanned<String>>,
    pub max_records_per_request: Option<Spanned<u64>>,
    pub max_records_per_hour: Option<Spanned<u64>>,
    pub max_records_per_day: Option<Spanned<u64>>,
    pub grant_required: Option<Spanned<bool>>,
}

/// One entry of a role's `routes`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawGrant {
    pub route: Spanned<String>,
    pub methods: Vec<Spanned<String>>,
}

/// A role's `detectors`: a keyword or a list of detector names.
#[derive(Debug)]
pub(crate) enum RawDetectors {
    /// `"all"`, `"none"` (or a wrong word, reported later).
    Keyword(String),
    /// `["ssn", "card"]`.
    List(Vec<Spanned<String>>),
}

impl<'de> Deserialize<'de> for RawDetectors {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = RawDetectors;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("\"all\", \"none\" or a list of detector names")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RawDetectors, E> {
                Ok(RawDetectors::Keyword(v.to_owned()))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawDetectors, A::Error> {
                let mut list = Vec::new();
                while let Some(item) = seq.next_element::<Spanned<String>>()? {
                    list.push(item);
                }
                Ok(RawDetectors::List(list))
            }
        }
        d.deserialize_any(V)
    }
}

/// One `[[principals]]` entry.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawPrincipal {
    pub name: Spanned<String>,
    pub roles: Option<Vec<Spanned<String>>>,
    pub cert_names: Option<Vec<Spanned<String>>>,
    /// The issuing CA's distinguished name (`CN=Client CA, O=City`).
    pub cert_issuer: Option<Spanned<String>>,
    /// Any TOML value: checked by hand so that no error message repeats it.
    pub api_key_sha256: Option<Spanned<toml::Value>>,
    pub may_delegate: Option<bool>,
    pub delegates: Option<Spanned<RawDelegates>>,
    pub revoked: Option<bool>,
    /// RFC 3339 string or TOML offset date-time.
    pub valid_from: Option<Spanned<toml::Value>>,
    /// RFC 3339 string or TOML offset date-time.
    pub valid_until: Option<Spanned<toml::Value>>,
    pub hours: Option<Spanned<RawHours>>,
}

/// A delegating principal's `delegates`: whom it may call for.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawDelegates {
    pub names: Option<Vec<Spanned<String>>>,
    pub pattern: Option<Spanned<String>>,
    pub max_per_day: Option<Spanned<u64>>,
}

/// A principal's allowed days and hours.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct RawHours {
    pub tz: Spanned<String>,
    pub days: Option<Vec<Spanned<String>>>,
    pub from: Spanned<String>,
    pub until: Spanned<String>,
}

// ---------------------------------------------------------------- parsing

/// Parses the gateway config, reporting every error. `None` when the file is
/// not valid TOML; otherwise the sections that could be read, and whether the
/// root itself had an error (an unknown section).
pub(crate) fn parse_gateway(src: &Source, diag: &mut Diag) -> Option<(RawGateway, bool)> {
    let text = src.text.as_str();
    let (raw, root_ok) = match parse_root::<RawGateway>(src, diag)? {
        Some(raw) => (raw, true),
        None => {
            let mut ok = true;
            let raw = RawGateway {
                server: extract(src, diag, "server", &mut ok),
                upstream: extract(src, diag, "upstream", &mut ok),
                limits: extract(src, diag, "limits", &mut ok),
                log: extract(src, diag, "log", &mut ok),
                data: extract(src, diag, "data", &mut ok),
                policy: extract(src, diag, "policy", &mut ok),
                crypto: extract(src, diag, "crypto", &mut ok),
                audit: extract(src, diag, "audit", &mut ok),
                lockout: extract(src, diag, "lockout", &mut ok),
                state: extract(src, diag, "state", &mut ok),
            };
            (raw, false)
        }
    };
    let mut refocus =
        |failed: bool, f: Focus<'_>, check: fn(&str, Focus<'_>) -> Option<toml::de::Error>| {
            if failed {
                report_focus(src, diag, check(text, f));
            }
        };
    refocus(
        is_failed(&raw.server),
        Focus::Section("server"),
        focus_error::<RawServer>,
    );
    refocus(
        is_failed(&raw.upstream),
        Focus::Section("upstream"),
        focus_error::<RawUpstream>,
    );
    refocus(
        is_failed(&raw.limits),
        Focus::Section("limits"),
        focus_error::<RawLimits>,
    );
    refocus(
        is_failed(&raw.log),
        Focus::Section("log"),
        focus_error::<RawLog>,
    );
    refocus(
        is_failed(&raw.data),
        Focus::Section("data"),
        focus_error::<RawData>,
    );
    refocus(
        is_failed(&raw.policy),
        Focus::Section("policy"),
        focus_error::<RawPolicyFiles>,
    );
    refocus(
        is_failed(&raw.crypto),
        Focus::Section("crypto"),
        focus_error::<RawCrypto>,
    );
    refocus(
        is_failed(&raw.audit),
        Focus::Section("audit"),
        focus_error::<RawAudit>,
    );
    refocus(
        is_failed(&raw.lockout),
        Focus::Section("lockout"),
        focus_error::<RawLockout>,
    );
    refocus(
        is_failed(&raw.state),
        Focus::Section("state"),
        focus_error::<RawState>,
    );
    Some((raw, root_ok))
}

/// Parses one policy file, reporting every error. `None` when the file is not
/// valid TOML; otherwise what could be read, and whether all of the file
/// could be read (false after an unknown top-level key or a wrongly typed
/// top-level value: definitions may be missing).
pub(crate) fn parse_policy(src: &Source, diag: &mut Diag) -> Option<(RawPolicyFile, bool)> {
    let text = src.text.as_str();
    let (raw, root_ok) = match parse_root::<RawPolicyFile>(src, diag)? {
        Some(raw) => (raw, true),
        None => {
            let mut ok = true;
            let raw = RawPolicyFile {
                redact_token: extract(src, diag, "redact_token", &mut ok),
                records: extract(src, diag, "records", &mut ok),
                classes: extract(src, diag, "classes", &mut ok),
                routes: extract(src, diag, "routes", &mut ok),
                roles: extract(src, diag, "roles", &mut ok),
                principals: extract(src, diag, "principals", &mut ok),
                grants: extract(src, diag, "grants", &mut ok),
                revocations: extract(src, diag, "revocations", &mut ok),
                admit: extract(src, diag, "admit", &mut ok),
                vocabulary: extract(src, diag, "vocabulary", &mut ok),
                identifiers: extract(src, diag, "identifiers", &mut ok),
            };
            (raw, false)
        }
    };
    if is_failed(&raw.records) {
        report_focus(
            src,
            diag,
            focus_error::<RawRecords>(text, Focus::Section("records")),
        );
    }
    fn entries<T: DeserializeOwned>(
        src: &Source,
        diag: &mut Diag,
        section: &str,
        list: &Option<Named<T>>,
    ) {
        for (name, value) in list.iter().flat_map(|n| &n.0) {
            if let Lenient::Failed(message) = value {
                match focus_error::<T>(&src.text, Focus::Entry(section, name.get_ref())) {
                    Some(e) => diag.push(src.toml_error(&e)),
                    None => diag.at(src, &name.span(), message.clone()),
                }
            }
        }
    }
    if is_failed(&raw.grants) {
        report_focus(
            src,
            diag,
            focus_error::<RawGrantPolicy>(text, Focus::Section("grants")),
        );
    }
    if is_failed(&raw.revocations) {
        report_focus(
            src,
            diag,
            focus_error::<RawRevocations>(text, Focus::Section("revocations")),
        );
    }
    if is_failed(&raw.admit) {
        report_focus(
            src,
            diag,
            focus_error::<RawAdmit>(text, Focus::Section("admit")),
        );
    }
    entries(src, diag, "classes", &raw.classes);
    entries(src, diag, "routes", &raw.routes);
    entries(src, diag, "roles", &raw.roles);
    for (i, p) in raw.principals.iter().flatten().enumerate() {
        if let Lenient::Failed(_) = p {
            report_focus(
                src,
                diag,
                focus_error::<RawPrincipal>(text, Focus::Element("principals", i)),
            );
        }
    }
    Some((raw, root_ok))
}

/// Deserializes the whole file as `T`. `None` (after reporting) when the
/// file is not valid TOML; `Some(None)` (after reporting) when it is valid
/// TOML but the root does not fit `T`.
fn parse_root<T: DeserializeOwned>(src: &Source, diag: &mut Diag) -> Option<Option<T>> {
    match toml::from_str::<T>(&src.text) {
        Ok(raw) => Some(Some(raw)),
        Err(e) => {
            if toml::from_str::<toml::Table>(&src.text).is_err() {
                let mut error = src.toml_error(&e);
                error.message = format!(
                    "TOML syntax error: {}; fix the TOML at this position (quotes, brackets, `key = value`)",
                    error.message
                );
                diag.push(error);
                return None;
            }
            diag.push(src.toml_error(&e));
            Some(None)
        }
    }
}

/// Deserializes one top-level key of the file as `T`, ignoring the others.
/// Reports its error and clears `ok` when it does not fit `T`.
fn extract<T: DeserializeOwned>(
    src: &Source,
    diag: &mut Diag,
    key: &str,
    ok: &mut bool,
) -> Option<T> {
    let seed = ExtractSeed::<T> {
        key,
        marker: PhantomData,
    };
    match seed.deserialize(toml::de::Deserializer::new(&src.text)) {
        Ok(v) => v,
        Err(e) => {
            diag.push(src.toml_error(&e));
            *ok = false;
            None
        }
    }
}

struct ExtractSeed<'k, T> {
    key: &'k str,
    marker: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for ExtractSeed<'_, T> {
    type Value = Option<T>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Option<T>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for ExtractSeed<'_, T> {
    type Value = Option<T>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Option<T>, A::Error> {
        let mut out = None;
        while let Some(key) = map.next_key::<String>()? {
            if key == self.key {
                out = Some(map.next_value::<T>()?);
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(out)
    }
}
fn is_failed<T>(v: &Option<Lenient<T>>) -> bool {
    matches!(v, Some(Lenient::Failed(_)))
}

fn report_focus(src: &Source, diag: &mut Diag, error: Option<toml::de::Error>) {
    match error {
        Some(e) => diag.push(src.toml_error(&e)),
        // Cannot happen: the entry failed in the full pass. Still report it.
        None => diag.at(
            src,
            &(0..0),
            "this file has an error that could not be located",
        ),
    }
}

/// Which part of a file a focus pass deserializes.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Focus<'a> {
    /// A top-level table: `[server]`.
    Section(&'a str),
    /// An entry of a top-level table: `[roles.NAME]`.
    Entry(&'a str, &'a str),
    /// An element of a top-level array: `[[principals]]` number N.
    Element(&'a str, usize),
}

/// Deserializes only the focused part of `text` as `T`, skipping the rest;
/// returns its error, with the span of the problem.
pub(crate) fn focus_error<T: DeserializeOwned>(
    text: &str,
    focus: Focus<'_>,
) -> Option<toml::de::Error> {
    let seed = RootSeed::<T> {
        focus,
        marker: PhantomData,
    };
    seed.deserialize(toml::de::Deserializer::new(text)).err()
}

struct RootSeed<'f, T> {
    focus: Focus<'f>,
    marker: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for RootSeed<'_, T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for RootSeed<'_, T> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let section = match self.focus {
            Focus::Section(s) | Focus::Entry(s, _) | Focus::Element(s, _) => s,
        };
        while let Some(key) = map.next_key::<String>()? {
            if key != section {
                map.next_value::<IgnoredAny>()?;
                continue;
            }
            match self.focus {
                Focus::Section(_) => {
                    map.next_value::<T>()?;
                }
                Focus::Entry(_, name) => map.next_value_seed(EntrySeed::<T> {
                    name,
                    marker: PhantomData,
                })?,
                Focus::Element(_, index) => map.next_value_seed(ElementSeed::<T> {
                    index,
                    marker: PhantomData,
                })?,
            }
        }
        Ok(())
    }
}

struct EntrySeed<'f, T> {
    name: &'f str,
    marker: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for EntrySeed<'_, T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for EntrySeed<'_, T> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a table")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(key) = map.next_key::<String>()? {
            if key == self.name {
                map.next_value::<T>()?;
            } else {
                map.next_value::<IgnoredAny>()?;
            }
        }
        Ok(())
    }
}

struct ElementSeed<T> {
    index: usize,
    marker: PhantomData<T>,
}

impl<'de, T: DeserializeOwned> DeserializeSeed<'de> for ElementSeed<T> {
    type Value = ();
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, T: DeserializeOwned> Visitor<'de> for ElementSeed<T> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let mut i = 0;
        loop {
            let more = if i == self.index {
                seq.next_element::<T>()?.is_some()
            } else {
                seq.next_element::<IgnoredAny>()?.is_some()
            };
            if !more {
                return Ok(());
            }
            i += 1;
        }
    }
}
