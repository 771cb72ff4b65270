//! Merging, checking and compiling the policy files into a [`Policy`].

use std::collections::{BTreeMap, HashMap, HashSet};
use std::num::NonZeroU32;
use std::ops::Range;
use std::sync::Arc;
use std::time::SystemTime;

use http::Method;
use toml::Spanned;

use super::access::{
    normalize_serial, AccessWindow, AdmitSettings, DailyHours, DaySet, PageCap, RatePeriod,
    RateSpec, Revocations, RouteRate,
};
use super::error::{Diag, Source};
use super::policy::{
    is_encrypted_class, method_bit, Delegates, GrantPolicy, Policy, Principal, Role, UnmaskRule,
    GET, HEAD,
};
use super::raw::{
    Lenient, RawAdmit, RawClass, RawDelegates, RawDetectors, RawGrant, RawGrantPolicy, RawHours,
    RawKeyList, RawPolicyFile, RawPrincipal, RawRate, RawRevocations, RawRole, RawRoute,
    RawRouteRate, RawUnmask, RawVocabulary,
};
use super::route::Route;
use crate::class::words::{PhraseKind, Vocabulary, VocabularyBuilder, VocabularyError};
use crate::class::{Action, ActionTable, FieldClass};
use crate::detect::{DetectorKind, DetectorSet};
use crate::rewrite::rules::{RulesBuilder, SelectorError};

/// Where something was defined.
#[derive(Clone)]
struct Place<'a> {
    src: &'a Source,
    span: Range<usize>,
}

impl Place<'_> {
    fn describe(&self) -> String {
        self.src.place(&self.span)
    }
}

/// A named definition; `body` is `None` when it failed to deserialize (its
/// error is already reported).
struct Def<'a, T> {
    name: String,
    at: Place<'a>,
    body: Option<T>,
}

/// A selector every role shares: a class name or path, a record path, the
/// name vocabulary, or one of the utility's own identifier names.
enum Shared {
    ClassName(String, FieldClass),
    ClassPath(String, FieldClass),
    Record(String),
    Vocabulary(Arc<Vocabulary>),
    Identifier(String),
}

impl Shared {
    fn apply(&self, b: &mut RulesBuilder) -> Result<(), SelectorError> {
        match self {
            Shared::ClassName(s, c) => b.class_name(s, *c),
            Shared::ClassPath(s, c) => b.class_path(s, *c),
            Shared::Record(s) => b.record_path(s),
            Shared::Vocabulary(v) => {
                b.vocabulary(Arc::clone(v));
                Ok(())
            }
            Shared::Identifier(s) => b.identifier_name(s),
        }
    }
}

/// A field name as selectors match it (lower case, letters and digits only).
fn normalized_name(name: &str) -> String {
    name.chars()
        .filter(char::is_ascii_alphanumeric)
        .map(|c| c.to_ascii_lowercase())
        .collect()
}

fn class_list() -> String {
    FieldClass::ALL.map(FieldClass::name).join(", ")
}

/// The one-line gist of a regex error (its message without the drawing of
/// the pattern).
fn regex_error_summary(e: &regex::Error) -> String {
    let text = e.to_string();
    let gist = text
        .lines()
        .rev()
        .find_map(|l| l.trim().strip_prefix("error: "))
        .map(str::to_owned)
        .unwrap_or_else(|| text.lines().map(str::trim).collect::<Vec<_>>().join("; "));
    gist.trim().to_owned()
}

fn detector_list() -> String {
    DetectorKind::ALL.map(DetectorKind::name).join(", ")
}

fn selector_hint(e: &SelectorError) -> &'static str {
    match e {
        SelectorError::PathNotAbsolute => {
            "start a path with '/' (plain field names belong in `names`)"
        }
        SelectorError::EmptyStep => "remove the doubled or trailing '/'",
        SelectorError::EmptyName => "a field name needs letters or digits",
        SelectorError::NameTooLong => "shorten it",
        SelectorError::TooManyPathSteps => {
            "use fewer or shorter path selectors (a field name matches at any depth)"
        }
        SelectorError::ConflictingClass { .. } => {
            "a field name or path may belong to one class only"
        }
    }
}

/// Largest `record_budget_per_day`.
const LIMIT_RECORD_BUDGET: u64 = 1_000_000_000;

/// True for role and route names: 1 to 64 letters, digits, '-', '_' or '.'.
fn valid_name(s: &str) -> bool {
    (1..=64).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

/// True for principal names: as [`valid_name`] plus '@', up to 128 characters.
fn valid_principal_name(s: &str) -> bool {
    (1..=128).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.@".contains(&b))
}

/// Content types that can carry red-flag values readably: passing them
/// through unrewritten on a red-flag route would release them. The one
/// media-type table lives with the rewriters.
fn rewritable_type(t: &str) -> bool {
    crate::rewrite::content::may_carry_red_flags(t)
}

fn valid_media_type(t: &str) -> bool {
    let token = |s: &str| {
        !s.is_empty()
            && s.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"!#$&-^_.+".contains(&b))
    };
    t.split_once('/').is_some_and(|(a, b)| token(a) && token(b))
}

/// Merges and compiles the policy files. `complete` is false when some policy
/// file could not be read or parsed: references to names it may define are
/// then not reported as unknown.
pub(crate) fn compile(
    inputs: Vec<(&Source, RawPolicyFile)>,
    complete: bool,
    diag: &mut Diag,
) -> Policy {
    let mut c = Compiler { diag, complete };
    let merged = c.merge(inputs);
    let shared = c.shared_selectors(&merged);
    let (routes, broken_routes) = c.routes(merged.routes);
    let route_index: HashMap<&str, usize> = routes
        .iter()
        .enumerate()
        .map(|(i, r)| (r.name.as_str(), i))
        .collect();
    let env = RoleEnv {
        routes: &routes,
        route_index: &route_index,
        broken_routes: &broken_routes,
        shared: &shared,
        redact_token: merged.redact_token.as_deref(),
    };
    let mut roles = BTreeMap::new();
    let mut broken_roles = HashSet::new();
    for def in merged.roles {
        match def
            .body
            .and_then(|body| c.role(&def.name, &def.at, body, &env))
        {
            Some(role) => {
                roles.insert(def.name, Arc::new(role));
            }
            // Its errors are reported; principals naming it are not.
            None => {
                broken_roles.insert(def.name);
            }
        }
    }
    let principals_complete = c.complete && !merged.broken_principals;
    let (principals, principal_names) = c.principals(merged.principals, &roles, &broken_roles);
    let grants = c.grant_policy(merged.grants, &roles, &broken_roles);
    let revocations = c.revocations(merged.revocations, &principal_names, principals_complete);
    let admit = c.admit_settings(merged.admit, &roles, &broken_roles);

    let mut route_order: Vec<usize> = (0..routes.len()).collect();
    route_order.sort_by(|&a, &b| routes[a].specificity_cmp(&routes[b]));
    let index = |f: &dyn Fn(&Principal) -> Vec<String>| {
        let mut m = HashMap::new();
        for (i, p) in principals.iter().enumerate() {
            for k in f(p) {
                m.entry(k).or_insert(i);
            }
        }
        m
    };
    let by_name = index(&|p| vec![p.name.clone()]);
    let by_cert_name = index(&|p| p.cert_names.clone());
    let mut by_key_hash = HashMap::new();
    for (i, p) in principals.iter().enumerate() {
        if let Some(h) = p.api_key_sha256 {
            by_key_hash.entry(h).or_insert(i);
        }
    }
    Policy {
        roles,
        routes,
        principals: principals.into_iter().map(Arc::new).collect(),
        grants,
        revocations,
        admit,
        route_order,
        by_name,
        by_cert_name,
        by_key_hash,
    }
}

/// All policy files' definitions, merged; duplicates reported.
#[derive(Default)]
struct Merged<'a> {
    redact_token: Option<String>,
    records: Vec<(&'a Source, Spanned<String>)>,
    classes: Vec<Def<'a, RawClass>>,
    routes: Vec<Def<'a, RawRoute>>,
    roles: Vec<Def<'a, RawRole>>,
    principals: Vec<(&'a Source, RawPrincipal)>,
    /// True when some `[[principals]]` entry could not be read: its name is
    /// unknown, so names in `[revocations]` are not reported as unknown.
    broken_principals: bool,
    grants: Option<(&'a Source, Spanned<RawGrantPolicy>)>,
    revocations: Vec<(&'a Source, RawRevocations)>,
    admit: Option<(&'a Source, Spanned<RawAdmit>)>,
    vocabulary: Vec<(&'a Source, Spanned<RawVocabulary>)>,
    identifiers: Vec<(&'a Source, Spanned<String>)>,
}

struct RoleEnv<'e> {
    routes: &'e [Route],
    route_index: &'e HashMap<&'e str, usize>,
    broken_routes: &'e HashSet<String>,
    shared: &'e [Shared],
    redact_token: Option<&'e str>,
}

struct Compiler<'d> {
    diag: &'d mut Diag,
    complete: bool,
}

impl Compiler<'_> {
    fn err(&mut self, src: &Source, span: &Range<usize>, message: impl Into<String>) {
        self.diag.at(src, span, message);
    }

    fn merge<'a>(&mut self, inputs: Vec<(&'a Source, RawPolicyFile)>) -> Merged<'a> {
        let mut m = Merged::default();
        let mut token_at: Option<Place<'a>> = None;
        let mut records_at: Option<Place<'a>> = None;
        let mut seen: HashMap<(&'static str, String), Place<'a>> = HashMap::new();
        for (src, raw) in inputs {
            if let Some(token) = raw.redact_token {
                let span = token.span();
                if let Some(first) = &token_at {
                    let first = first.describe();
                    self.err(
                        src,
                        &span,
                        format!("redact_token is already set at {first}; set it once"),
                    );
                } else if token.get_ref().trim().is_empty()
                    || token.get_ref().chars().any(char::is_control)
                {
                    self.err(
                        src,
                        &span,
                        "redact_token must be visible text, such as \"[REDACTED]\"",
                    );
                } else {
                    token_at = Some(Place { src, span });
                    m.redact_token = Some(token.into_inner());
                }
            }
            if let Some(Lenient::Ok(records)) = raw.records {
                let span = records.span();
                if let Some(first) = &records_at {
                    let first = first.describe();
                    self.err(
                        src,
                        &span,
                        format!("[records] is already defined at {first}; define it once"),
                    );
                } else {
                    records_at = Some(Place { src, span });
                    m.records
                        .extend(records.into_inner().paths.into_iter().map(|p| (src, p)));
                }
            }
            if let Some(Lenient::Ok(grants)) = raw.grants {
                let span = grants.span();
                if let Some((first_src, first)) = &m.grants {
                    let first = first_src.place(&first.span());
                    self.err(
                        src,
                        &span,
                        format!("[grants] is already defined at {first}; define it once"),
                    );
                } else {
                    m.grants = Some((src, grants));
                }
            }
            match raw.revocations {
                Some(Lenient::Ok(r)) => m.revocations.push((src, r.into_inner())),
                Some(Lenient::Failed(_)) | None => {}
            }
            if let Some(Lenient::Ok(admit)) = raw.admit {
                let span = admit.span();
                if let Some((first_src, first)) = &m.admit {
                    let first = first_src.place(&first.span());
                    self.err(
                        src,
                        &span,
                        format!("[admit] is already defined at {first}; define it once"),
                    );
                } else {
                    m.admit = Some((src, admit));
                }
            }
            let mut take = |kind: &'static str,
                            name: Spanned<String>|
             -> Option<(String, Place<'a>)> {
                let span = name.span();
                let name = name.into_inner();
                let key = (kind, name.clone());
                if let Some(first) = seen.get(&key) {
                    let first = first.describe();
                    self.diag.at(
                        src,
                        &span,
                        format!("{kind} `{name}` is already defined at {first}; rename or remove one of them"),
                    );
                    return None;
                }
                let at = Place { src, span };
                seen.insert(key, at.clone());
                Some((name, at))
            };
            if let Some(v) = raw.vocabulary {
                m.vocabulary.push((src, v));
            }
            if let Some(ids) = raw.identifiers {
                m.identifiers
                    .extend(ids.into_inner().names.into_iter().map(|n| (src, n)));
            }
            for (name, body) in raw.classes.into_iter().flat_map(|n| n.0) {
                if let Some((name, at)) = take("class", name) {
                    m.classes.push(Def {
                        name,
                        at,
                        body: body.into_option(),
                    });
                }
            }
            for (name, body) in raw.routes.into_iter().flat_map(|n| n.0) {
                if let Some((name, at)) = take("route", name) {
                    m.routes.push(Def {
                        name,
                        at,
                        body: body.into_option(),
                    });
                }
            }
            for (name, body) in raw.roles.into_iter().flat_map(|n| n.0) {
                if let Some((name, at)) = take("role", name) {
                    m.roles.push(Def {
                        name,
                        at,
                        body: body.into_option(),
                    });
                }
            }
            for p in raw.principals.into_iter().flatten() {
                match p {
                    Lenient::Ok(p) => m.principals.push((src, p)),
                    Lenient::Failed(_) => m.broken_principals = true,
                }
            }
        }
        m
    }

    /// Checks the class selectors and record paths once (errors are reported
    /// at the selector, not once per role) and keeps the good ones.
    fn shared_selectors(&mut self, m: &Merged<'_>) -> Vec<Shared> {
        let mut check = RulesBuilder::new();
        let mut shared = Vec::new();
        let mut add = |this: &mut Self, src: &Source, sel: &Spanned<String>, s: Shared| match s
            .apply(&mut check)
        {
            Ok(()) => shared.push(s),
            Err(e) => {
                let hint = selector_hint(&e);
                this.err(
                    src,
                    &sel.span(),
                    format!("bad selector `{}`: {e}; {hint}", sel.get_ref()),
                );
            }
        };
        for def in &m.classes {
            let Some(class) = FieldClass::from_name(&def.name) else {
                let list = class_list();
                self.err(
                    def.at.src,
                    &def.at.span,
                    format!("unknown class `{}`; the classes are {list}", def.name),
                );
                continue;
            };
            let Some(body) = &def.body else { continue };
            for name in body.names.iter().flatten() {
                if name.get_ref().contains('/') {
                    self.err(
                        def.at.src,
                        &name.span(),
                        format!(
                            "field name `{}` contains '/'; put JSON paths in `paths`",
                            name.get_ref()
                        ),
                    );
                    continue;
                }
                add(
                    self,
                    def.at.src,
                    name,
                    Shared::ClassName(name.get_ref().clone(), class),
                );
            }
            for path in body.paths.iter().flatten() {
                add(
                    self,
                    def.at.src,
                    path,
                    Shared::ClassPath(path.get_ref().clone(), class),
                );
            }
        }
        let vocabulary = self.vocabulary(m);
        let class_names: HashMap<String, FieldClass> = m
            .classes
            .iter()
            .filter_map(|def| {
                let class = FieldClass::from_name(&def.name)?;
                Some((def.body.as_ref()?.names.iter().flatten(), class))
            })
            .flat_map(|(names, class)| names.map(move |n| (normalized_name(n.get_ref()), class)))
            .collect();
        for (src, name) in &m.identifiers {
            if let Some(class) = class_names.get(&normalized_name(name.get_ref())) {
                self.err(
                    src,
                    &name.span(),
                    format!(
                        "identifier `{}` is also a field name of class {class}; a field is either the utility's own identifier or red-flag data, remove it from one list",
                        name.get_ref()
                    ),
                );
                continue;
            }
            add(self, src, name, Shared::Identifier(name.get_ref().clone()));
        }
        for (src, path) in &m.records {
            add(self, src, path, Shared::Record(path.get_ref().clone()));
        }
        if m.records.is_empty() {
            shared.push(Shared::Record("/".to_owned()));
        }
        if let Some(v) = vocabulary {
            shared.push(Shared::Vocabulary(Arc::new(v)));
        }
        shared
    }

    /// Builds the name vocabulary from `[vocabulary]` and the classes'
    /// phrase lists, reporting conflicts (one spelling for two words, one
    /// phrase for two classes) where they are written.
    fn vocabulary(&mut self, m: &Merged<'_>) -> Option<Vocabulary> {
        let mut b = VocabularyBuilder::new();
        // Where each phrase and synonym was written, to report conflicts there.
        let mut places: Vec<(String, Place<'_>)> = Vec::new();
        for (src, raw) in &m.vocabulary {
            let v = raw.get_ref();
            for (canonical, spellings) in v.synonyms.iter().flatten() {
                for s in spellings {
                    b.synonym(canonical.get_ref(), s.get_ref());
                    places.push((
                        s.get_ref().to_ascii_lowercase(),
                        Place {
                            src,
                            span: s.span(),
                        },
                    ));
                }
            }
            for q in v.qualifiers.iter().flatten() {
                b.qualifier(q.get_ref());
            }
            for o in v.owner_words.iter().flatten() {
                b.owner_word(o.get_ref());
            }
            for g in v.generic_values.iter().flatten() {
                b.generic_value(g.get_ref());
            }
            for d in v.descriptors.iter().flatten() {
                b.descriptor(d.get_ref());
            }
        }
        for def in &m.classes {
            let (Some(class), Some(body)) = (FieldClass::from_name(&def.name), &def.body) else {
                continue;
            };
            for (kind, list) in [
                (PhraseKind::Word, &body.words),
                (PhraseKind::Whole, &body.whole_words),
                (PhraseKind::Ambiguous, &body.ambiguous),
                (PhraseKind::Container, &body.containers),
            ] {
                for phrase in list.iter().flatten() {
                    b.phrase(phrase.get_ref(), class, kind);
                    places.push((
                        phrase.get_ref().to_ascii_lowercase(),
                        Place {
                            src: def.at.src,
                            span: phrase.span(),
                        },
                    ));
                }
            }
        }
        match b.build() {
            Ok(v) => Some(v),
            Err(errors) => {
                for e in errors {
                    let key = match &e {
                        VocabularyError::EmptyPhrase(p) => p.to_ascii_lowercase(),
                        VocabularyError::SynonymConflict { spelling, .. } => spelling.clone(),
                        VocabularyError::PhraseConflict { phrase, .. } => phrase.clone(),
                    };
                    let at = places
                        .iter()
                        .rev()
                        .find(|(k, _)| *k == key)
                        .or(places.last())
                        .map(|(_, p)| p.clone());
                    if let Some(at) = at {
                        self.err(
                            at.src,
                            &at.span,
                            format!(
                                "{e}; a name must lead to one class: remove or rename one of them"
                            ),
                        );
                    }
                }
                None
            }
        }
    }

    fn routes(&mut self, defs: Vec<Def<'_, RawRoute>>) -> (Vec<Route>, HashSet<String>) {
        let mut routes = Vec::new();
        let mut broken = HashSet::new();
        let mut shapes: HashMap<String, (String, String)> = HashMap::new();
        for def in defs {
            let Some(body) = def.body else {
                broken.insert(def.name);
                continue;
            };
            let src = def.at.src;
            let mut ok = true;
            if !valid_name(&def.name) {
                self.err(
                    src,
                    &def.at.span,
                    format!(
                        "route name `{}` is not valid; use 1-64 letters, digits, '-', '_' or '.'",
                        def.name
                    ),
                );
                ok = false;
            }
            let red_flag = body.red_flag.unwrap_or(true);
            let mut types = Vec::new();
            for t in body.passthrough_types.iter().flatten() {
                let lower = t.get_ref().trim().to_ascii_lowercase();
                if !valid_media_type(&lower) {
                    self.err(
                        src,
                        &t.span(),
                        format!(
                            "passthrough type `{}` is not a media type; write type/subtype such as \"image/png\" (no wildcards or parameters)",
                            t.get_ref()
                        ),
                    );
                    ok = false;
                } else if red_flag && rewritable_type(&lower) {
                    self.err(
                        src,
                        &t.span(),
                        format!(
                            "`{lower}` may not pass through a red_flag route unrewritten: it can carry red-flag values; remove it, or set red_flag = false if this route never carries customer data"
                        ),
                    );
                    ok = false;
                } else {
                    types.push(lower);
                }
            }
            let page_cap = self.page_cap(src, &body);
            if page_cap.is_err() {
                ok = false;
            }
            let path = body.path;
            match Route::new(
                def.name.clone(),
                path.get_ref().clone(),
                red_flag,
                body.export.unwrap_or(false),
                types,
            ) {
                Err(message) => {
                    broken.insert(def.name);
                    self.err(src, &path.span(), message);
                }
                Ok(mut route) => {
                    route.page_cap = page_cap.unwrap_or(None);
                    if let Some((first_name, first_at)) = shapes.get(&route.shape()) {
                        self.err(
                            src,
                            &path.span(),
                            format!(
                                "route `{}` (`{}`) matches exactly the paths of route `{first_name}` at {first_at}, so a request could not tell them apart; remove one or make a segment differ",
                                route.name, route.template
                            ),
                        );
                    } else {
                        shapes.insert(route.shape(), (route.name.clone(), src.place(&path.span())));
                    }
                    if ok {
                        routes.push(route);
                    } else {
                        broken.insert(def.name);
                    }
                }
            }
        }
        (routes, broken)
    }

    /// A route's `page_param` and `max_page_size`; `Err` after reporting.
    fn page_cap(&mut self, src: &Source, body: &RawRoute) -> Result<Option<PageCap>, ()> {
        let max = match (&body.page_param, &body.max_page_size) {
            (None, None) => return Ok(None),
            (Some(p), None) => {
                self.err(
                    src,
                    &p.span(),
                    "page_param needs max_page_size: set the largest page size passed upstream, such as max_page_size = 100",
                );
                return Err(());
            }
            (_, Some(max)) => max,
        };
        let mut ok = true;
        let limit = match u32::try_from(*max.get_ref()) {
            Ok(n) if (1..=PageCap::LIMIT).contains(&n) => n,
            _ => {
                self.err(
                    src,
                    &max.span(),
                    format!(
                        "max_page_size must be 1 to {}; it is the most records one page may ask for",
                        PageCap::LIMIT
                    ),
                );
                ok = false;
                0
            }
        };
        let param = match &body.page_param {
            None => "limit".to_owned(),
            Some(p) if valid_name(p.get_ref()) => p.get_ref().clone(),
            Some(p) => {
                self.err(
                    src,
                    &p.span(),
                    format!(
                        "page_param `{}` is not a query parameter name; use 1-64 letters, digits, '-', '_' or '.', such as \"limit\"",
                        p.get_ref()
                    ),
                );
                ok = false;
                String::new()
            }
        };
        if ok {
            Ok(Some(PageCap { param, max: limit }))
        } else {
            Err(())
        }
    }

    /// A rate limit table; `None` after reporting its errors. `key` names
    /// it in messages (`rate`, `route_rates.accounts.role_rate`).
    fn rate(&mut self, src: &Source, raw: &Spanned<RawRate>, key: &str) -> Option<RateSpec> {
        let table = raw.get_ref();
        let in_range = |this: &mut Self, v: &Spanned<u64>, what: &str| -> Option<NonZeroU32> {
            let n = u32::try_from(*v.get_ref())
                .ok()
                .filter(|n| *n <= RateSpec::LIMIT)
                .and_then(NonZeroU32::new);
            if n.is_none() {
                this.err(
                    src,
                    &v.span(),
                    format!(
                        "{key}.{what} must be 1 to {}; to remove a limit, remove the table",
                        RateSpec::LIMIT
                    ),
                );
            }
            n
        };
        let (count, period) = match (&table.per_second, &table.per_minute) {
            (Some(_), Some(m)) => {
                self.err(
                    src,
                    &m.span(),
                    format!("{key} gives both per_second and per_minute; keep one"),
                );
                return None;
            }
            (None, None) => {
                self.err(
                    src,
                    &raw.span(),
                    format!(
                        "{key} needs per_second or per_minute, such as {{ per_second = 20, burst = 40 }}"
                    ),
                );
                return None;
            }
            (Some(v), None) => (in_range(self, v, "per_second"), RatePeriod::Second),
            (None, Some(v)) => (in_range(self, v, "per_minute"), RatePeriod::Minute),
        };
        let burst = match &table.burst {
            None => count,
            Some(b) => in_range(self, b, "burst"),
        };
        Some(RateSpec {
            count: count?,
            period,
            burst: burst?,
        })
    }

    /// A role's `route_rates`: each route known and granted to the role.
    fn route_rates(
        &mut self,
        src: &Source,
        map: BTreeMap<Spanned<String>, Spanned<RawRouteRate>>,
        grants: &[u8],
        env: &RoleEnv<'_>,
    ) -> BTreeMap<usize, RouteRate> {
        let mut out = BTreeMap::new();
        for (name, value) in map {
            let route = name.get_ref().as_str();
            let index = match env.route_index.get(route) {
                Some(&i) => Some(i),
                None if !self.complete || env.broken_routes.contains(route) => None,
                None => {
                    let mut names: Vec<&str> = env
                        .route_index
                        .keys()
                        .copied()
                        .chain(env.broken_routes.iter().map(String::as_str))
                        .collect();
                    names.sort_unstable();
                    let hint = if names.is_empty() {
                        "no route is defined yet".to_owned()
                    } else {
                        format!("use one of: {}", names.join(", "))
                    };
                    self.err(
                        src,
                        &name.span(),
                        format!("unknown route `{route}` in route_rates; {hint}"),
                    );
                    None
                }
            };
            if let Some(i) = index {
                if grants.get(i).copied().unwrap_or(0) == 0 {
                    self.err(
                        src,
                        &name.span(),
                        format!(
                            "the role may not call route `{route}` (its `routes` do not grant it), so it needs no rate there; grant the route or remove it from route_rates"
                        ),
                    );
                }
            }
            let span = value.span();
            let value = value.into_inner();
            if value.rate.is_none() && value.role_rate.is_none() {
                self.err(
                    src,
                    &span,
                    format!("route_rates.{route} sets no limit; give rate and/or role_rate, or remove it"),
                );
            }
            let rate = value
                .rate
                .as_ref()
                .and_then(|r| self.rate(src, r, &format!("route_rates.{route}.rate")));
            let role_rate = value
                .role_rate
                .as_ref()
                .and_then(|r| self.rate(src, r, &format!("route_rates.{route}.role_rate")));
            if let Some(i) = index {
                out.insert(i, RouteRate { rate, role_rate });
            }
        }
        out
    }

    fn role(
        &mut self,
        name: &str,
        at: &Place<'_>,
        body: RawRole,
        env: &RoleEnv<'_>,
    ) -> Option<Role> {
        let src = at.src;
        let before = self.diag_len();
        if !valid_name(name) {
            self.err(
                src,
                &at.span,
                format!(
                    "role name `{name}` is not valid; use 1-64 letters, digits, '-', '_' or '.'"
                ),
            );
        }
        let allow_fields = body.allow_fields.unwrap_or_default();
        let allowlist = match &body.allowlist {
            Some(flag) if !*flag.get_ref() && !allow_fields.is_empty() => {
                self.err(
                    src,
                    &flag.span(),
                    "allowlist = false contradicts a non-empty allow_fields (which turns allowlist mode on); remove one of them",
                );
                true
            }
            Some(flag) => *flag.get_ref() || !allow_fields.is_empty(),
            None => !allow_fields.is_empty(),
        };
        let may_export = match &body.may_export {
            None => !allowlist,
            Some(flag) if *flag.get_ref() && allowlist => {
                self.err(
                    src,
                    &flag.span(),
                    "allowlist roles may not export: bulk export routes hand over whole tables; remove may_export or turn allowlist mode off",
                );
                false
            }
            Some(flag) => *flag.get_ref(),
        };
        let may_search_cards = match &body.may_search_cards {
            None => false,
            Some(flag) if *flag.get_ref() && allowlist => {
                self.err(
                    src,
                    &flag.span(),
                    "allowlist roles may not search by card number: a search tells whether a card is on file; remove may_search_cards or turn allowlist mode off",
                );
                false
            }
            Some(flag) => *flag.get_ref(),
        };
        let card_search_rate = match &body.card_search_rate {
            Some(r) if !may_search_cards => {
                self.err(
                    src,
                    &r.span(),
                    "card_search_rate without may_search_cards = true limits nothing; remove it or grant the right",
                );
                None
            }
            Some(r) => self.rate(src, r, "card_search_rate"),
            None => may_search_cards.then_some(Role::DEFAULT_CARD_SEARCH_RATE),
        };
        let grants = self.grants(
            src,
            body.routes.unwrap_or_default(),
            allowlist,
            may_export,
            env,
        );
        let rate = body.rate.as_ref().and_then(|r| self.rate(src, r, "rate"));
        let role_rate = body
            .role_rate
            .as_ref()
            .and_then(|r| self.rate(src, r, "role_rate"));
        let route_rates = self.route_rates(src, body.route_rates.unwrap_or_default(), &grants, env);
        let record_budget_per_day = body.record_budget_per_day.as_ref().and_then(|b| {
            let n = *b.get_ref();
            if (1..=LIMIT_RECORD_BUDGET).contains(&n) {
                Some(n)
            } else {
                self.err(
                    src,
                    &b.span(),
                    format!(
                        "record_budget_per_day must be 1 to {LIMIT_RECORD_BUDGET} records; remove it for no budget"
                    ),
                );
                None
            }
        });
        let actions = self.actions(src, body.actions.unwrap_or_default(), allowlist);
        let unmask = body
            .unmask
            .and_then(|u| self.unmask(src, u, allowlist, &grants, env));
        let detectors = match body.detectors {
            None => DetectorSet::ALL,
            Some(d) => self.detectors(src, d),
        };

        let mut b = RulesBuilder::new();
        // A record's `id` / `account_id` names the account (audit records list it).
        for id in ["id", "account_id"] {
            let _ = b.record_id_name(id);
        }
        for s in env.shared {
            if let Err(e) = s.apply(&mut b) {
                // The same selectors compiled in the same order when checked.
                self.err(
                    src,
                    &at.span,
                    format!("internal error compiling the shared selectors: {e}"),
                );
            }
        }
        if allowlist {
            b.allowlist();
        }
        for f in &allow_fields {
            let text = f.get_ref();
            let result = if text.starts_with('/') {
                b.allow_path(text)
            } else {
                b.allow_name(text)
            };
            if let Err(e) = result {
                let hint = selector_hint(&e);
                self.err(
                    src,
                    &f.span(),
                    format!("bad allow_fields entry `{text}`: {e}; {hint}"),
                );
            }
        }
        b.detectors(detectors);
        if let Some(token) = env.redact_token {
            b.redact_token(token);
        }
        if self.diag_len() != before {
            return None;
        }
        let read_only = grants.iter().all(|&bits| bits & !(GET | HEAD) == 0);
        Some(Role {
            name: name.to_owned(),
            description: body.description.unwrap_or_default(),
            actions,
            rules: Arc::new(b.build()),
            read_only,
            unmask,
            rate,
            role_rate,
            route_rates,
            record_budget_per_day,
            may_export,
            may_search_cards,
            card_search_rate,
            grants,
        })
    }

    fn diag_len(&self) -> usize {
        self.diag.len()
    }

    fn grants(
        &mut self,
        src: &Source,
        list: Vec<RawGrant>,
        allowlist: bool,
        may_export: bool,
        env: &RoleEnv<'_>,
    ) -> Vec<u8> {
        let mut grants = vec![0u8; env.routes.len()];
        let mut granted: HashMap<String, Range<usize>> = HashMap::new();
        for g in list {
            let route_name = g.route.get_ref();
            let route_span = g.route.span();
            if let Some(first) = granted.get(route_name) {
                let first = src.place(first);
                self.err(
                    src,
                    &route_span,
                    format!("route `{route_name}` is granted twice in this role (first at {first}); merge the methods into one entry"),
                );
                continue;
            }
            granted.insert(route_name.clone(), route_span.clone());
            let index = env.route_index.get(route_name.as_str()).copied();
            if index.is_none() && self.complete && !env.broken_routes.contains(route_name) {
                let mut names: Vec<&str> = env
                    .route_index
                    .keys()
                    .copied()
                    .chain(env.broken_routes.iter().map(String::as_str))
                    .collect();
                names.sort_unstable();
                let hint = if names.is_empty() {
                    "no route is defined yet".to_owned()
                } else {
                    format!("use one of: {}", names.join(", "))
                };
                self.err(
                    src,
                    &route_span,
                    format!("unknown route `{route_name}`; define it under [routes] or {hint}"),
                );
            }
            if g.methods.is_empty() {
                self.err(
                    src,
                    &route_span,
                    format!("the grant of route `{route_name}` names no method; list them, such as methods = [\"GET\"]"),
                );
            }
            let mut bits = 0u8;
            for m in &g.methods {
                let bit = Method::from_bytes(m.get_ref().as_bytes())
                    .ok()
                    .as_ref()
                    .and_then(method_bit);
                let Some(bit) = bit else {
                    self.err(
                        src,
                        &m.span(),
                        format!(
                            "method `{}` is not valid; use upper case GET, HEAD, POST, PUT, PATCH, DELETE or OPTIONS",
                            m.get_ref()
                        ),
                    );
                    continue;
                };
                if allowlist && bit & (GET | HEAD) == 0 {
                    self.err(
                        src,
                        &m.span(),
                        format!(
                            "allowlist roles are read-only: `{}` on route `{route_name}` is not allowed; grant only GET (HEAD is implied), or turn allowlist mode off",
                            m.get_ref()
                        ),
                    );
                    continue;
                }
                bits |= bit;
            }
            if let Some(i) = index {
                if env.routes[i].export && !may_export {
                    let why = if allowlist {
                        "allowlist roles may not export"
                    } else {
                        "the role has may_export = false"
                    };
                    self.err(
                        src,
                        &route_span,
                        format!(
                            "route `{route_name}` is a bulk export route and {why}; remove the grant"
                        ),
                    );
                }
                grants[i] = bits;
            }
        }
        grants
    }

    /// Checks and compiles a role's `unmask` table. `grants` are the role's
    /// method bits per route index.
    fn unmask(
        &mut self,
        src: &Source,
        raw: Spanned<RawUnmask>,
        allowlist: bool,
        grants: &[u8],
        env: &RoleEnv<'_>,
    ) -> Option<UnmaskRule> {
        let before = self.diag_len();
        let table_span = raw.span();
        let raw = raw.into_inner();
        if allowlist {
            self.err(
                src,
                &table_span,
                "allowlist roles may not have `unmask`: they only see allowed non-red-flag fields; remove the unmask table or turn allowlist mode off",
            );
        }
        let grant_required = raw.grant_required.as_ref().is_some_and(|g| *g.get_ref());

        let mut classes: Vec<FieldClass> = Vec::new();
        if raw.classes.is_empty() {
            self.err(
                src,
                &table_span,
                "unmask.classes is empty; list the classes the role may ask to see, such as classes = [\"ssn\"]",
            );
        }
        for c in &raw.classes {
            let Some(class) = FieldClass::from_name(c.get_ref()) else {
                let list = class_list();
                self.err(
                    src,
                    &c.span(),
                    format!(
                        "unknown class `{}` in unmask.classes; the classes are {list}",
                        c.get_ref()
                    ),
                );
                continue;
            };
            if classes.contains(&class) {
                self.err(
                    src,
                    &c.span(),
                    format!("class `{class}` is listed twice in unmask.classes; list it once"),
                );
                continue;
            }
            if is_encrypted_class(class) && !grant_required {
                self.err(
                    src,
                    &c.span(),
                    format!(
                        "`{class}` is stored encrypted: showing it needs a decrypt grant; set grant_required = true (and keep only encrypted classes in this rule)"
                    ),
                );
            } else if !is_encrypted_class(class) && grant_required {
                self.err(
                    src,
                    &c.span(),
                    format!(
                        "`{class}` is not an encrypted class, but grant_required = true: a grant rule may list only card_number, card_expiry and bank_account; remove `{class}` or set grant_required = false"
                    ),
                );
            }
            classes.push(class);
        }
        classes.sort_unstable();

        let mut routes: Vec<usize> = Vec::new();
        let mut seen: HashSet<&str> = HashSet::new();
        if raw.routes.is_empty() {
            self.err(
                src,
                &table_span,
                "unmask.routes is empty; list the routes where the role may ask, such as routes = [\"account\"]",
            );
        }
        for r in &raw.routes {
            let name = r.get_ref().as_str();
            if !seen.insert(name) {
                self.err(
                    src,
                    &r.span(),
                    format!("route `{name}` is listed twice in unmask.routes; list it once"),
                );
                continue;
            }
            match env.route_index.get(name) {
                Some(&i) => {
                    if grants.get(i).copied().unwrap_or(0) == 0 {
                        self.err(
                            src,
                            &r.span(),
                            format!(
                                "the role may not call route `{name}` (its `routes` do not grant it), so it cannot unmask there; grant the route or remove it from unmask.routes"
                            ),
                        );
                    } else {
                        routes.push(i);
                    }
                }
                None if !self.complete || env.broken_routes.contains(name) => {}
                None => {
                    let mut names: Vec<&str> = env
                        .route_index
                        .keys()
                        .copied()
                        .chain(env.broken_routes.iter().map(String::as_str))
                        .collect();
                    names.sort_unstable();
                    let hint = if names.is_empty() {
                        "no route is defined yet".to_owned()
                    } else {
                        format!("use one of: {}", names.join(", "))
                    };
                    self.err(
                        src,
                        &r.span(),
                        format!("unknown route `{name}` in unmask.routes; {hint}"),
                    );
                }
            }
        }
        routes.sort_unstable();

        let max_reason = crate::audit::record::MAX_REASON_CHARS;
        let reason_min_len = match &raw.reason_min_len {
            None => UnmaskRule::DEFAULT_REASON_MIN_LEN,
            Some(n) => match usize::try_from(*n.get_ref()) {
                Ok(v) if v <= max_reason => v,
                _ => {
                    self.err(
                        src,
                        &n.span(),
                        format!(
                            "reason_min_len {} is longer than the longest reason accepted ({max_reason} characters); use 0 to {max_reason}",
                            n.get_ref()
                        ),
                    );
                    0
                }
            },
        };
        let reason_pattern = raw
            .reason_pattern
            .as_ref()
            .and_then(|p| self.reason_pattern(src, p));

        let limit = |this: &mut Self, key: &str, v: &Option<Spanned<u64>>, default: u32| {
            let Some(v) = v else {
                return (default, None);
            };
            match u32::try_from(*v.get_ref()) {
                Ok(n) if (1..=UnmaskRule::LIMIT_RECORDS).contains(&n) => (n, Some(v.span())),
                _ => {
                    this.err(
                        src,
                        &v.span(),
                        format!(
                            "{key} must be 1 to {}; it counts records",
                            UnmaskRule::LIMIT_RECORDS
                        ),
                    );
                    (default, None)
                }
            }
        };
        let (per_request, request_at) = limit(
            self,
            "max_records_per_request",
            &raw.max_records_per_request,
            UnmaskRule::DEFAULT_PER_REQUEST,
        );
        let (per_hour, hour_at) = limit(
            self,
            "max_records_per_hour",
            &raw.max_records_per_hour,
            UnmaskRule::DEFAULT_PER_HOUR,
        );
        let (per_day, day_at) = limit(
            self,
            "max_records_per_day",
            &raw.max_records_per_day,
            UnmaskRule::DEFAULT_PER_DAY,
        );
        if per_request > per_hour {
            let span = request_at.or(hour_at.clone()).unwrap_or(table_span.clone());
            self.err(
                src,
                &span,
                format!(
                    "max_records_per_request ({per_request}) is more than max_records_per_hour ({per_hour}); lower it or raise the hourly limit"
                ),
            );
        }
        if per_hour > per_day {
            let span = hour_at.or(day_at).unwrap_or(table_span);
            self.err(
                src,
                &span,
                format!(
                    "max_records_per_hour ({per_hour}) is more than max_records_per_day ({per_day}); lower it or raise the daily limit"
                ),
            );
        }
        if self.diag_len() != before {
            return None;
        }
        Some(UnmaskRule {
            classes,
            routes,
            reason_min_len,
            reason_pattern,
            max_records_per_request: per_request,
            max_records_per_hour: per_hour,
            max_records_per_day: per_day,
            grant_required,
        })
    }

    /// Compiles a reason pattern: byte-oriented, ASCII classes, bounded size.
    fn reason_pattern(&mut self, src: &Source, p: &Spanned<String>) -> Option<regex::bytes::Regex> {
        let text = p.get_ref();
        if text.is_empty() || text.len() > UnmaskRule::LIMIT_PATTERN_BYTES {
            self.err(
                src,
                &p.span(),
                format!(
                    "reason_pattern must be 1 to {} bytes; remove it to accept any reason of the minimum length",
                    UnmaskRule::LIMIT_PATTERN_BYTES
                ),
            );
            return None;
        }
        let built = regex::bytes::RegexBuilder::new(text)
            .unicode(false)
            .size_limit(1 << 20)
            .dfa_size_limit(1 << 20)
            .build();
        match built {
            Ok(re) => Some(re),
            Err(e) => {
                let detail = regex_error_summary(&e);
                self.err(
                    src,
                    &p.span(),
                    format!(
                        "reason_pattern is not a valid regular expression: {detail}; patterns use ASCII classes (write [0-9], not \\d with Unicode), and backslashes in a TOML basic string are doubled"
                    ),
                );
                None
            }
        }
    }

    /// Checks and fills in `[grants]`; role names are checked against the
    /// compiled roles.
    fn grant_policy(
        &mut self,
        raw: Option<(&Source, Spanned<RawGrantPolicy>)>,
        roles: &BTreeMap<String, Arc<Role>>,
        broken_roles: &HashSet<String>,
    ) -> GrantPolicy {
        let mut out = GrantPolicy::default();
        let Some((src, raw)) = raw else {
            return out;
        };
        let raw = raw.into_inner();
        if let Some(v) = &raw.max_validity_minutes {
            match u32::try_from(*v.get_ref()) {
                Ok(n) if (1..=GrantPolicy::LIMIT_VALIDITY_MINUTES).contains(&n) => {
                    out.max_validity_minutes = n;
                }
                _ => self.err(
                    src,
                    &v.span(),
                    format!(
                        "max_validity_minutes must be 1 to {} (7 days); grants are time-boxed",
                        GrantPolicy::LIMIT_VALIDITY_MINUTES
                    ),
                ),
            }
        }
        if let Some(v) = &raw.max_uses {
            match u32::try_from(*v.get_ref()) {
                Ok(n) if (1..=GrantPolicy::LIMIT_USES).contains(&n) => out.max_uses = n,
                _ => self.err(
                    src,
                    &v.span(),
                    format!("max_uses must be 1 to {}", GrantPolicy::LIMIT_USES),
                ),
            }
        }
        let role_name = |this: &mut Self, key: &str, v: &Spanned<String>| -> Option<String> {
            let name = v.get_ref();
            let known = roles.contains_key(name) || broken_roles.contains(name);
            if !known && this.complete {
                let mut defined: Vec<&str> = roles
                    .keys()
                    .chain(broken_roles.iter())
                    .map(String::as_str)
                    .collect();
                defined.sort_unstable();
                let hint = if defined.is_empty() {
                    "no role is defined yet".to_owned()
                } else {
                    format!("use one of: {}", defined.join(", "))
                };
                this.err(
                    src,
                    &v.span(),
                    format!("unknown role `{name}` in grants.{key}; {hint}"),
                );
                return None;
            }
            Some(name.clone())
        };
        if let Some(v) = &raw.approver_role {
            if let Some(n) = role_name(self, "approver_role", v) {
                out.approver_role = n;
            }
        }
        if let Some(v) = &raw.grantee_role {
            if let Some(n) = role_name(self, "grantee_role", v) {
                out.grantee_role = n;
            }
        }
        if out.approver_role == out.grantee_role {
            let span = raw
                .grantee_role
                .as_ref()
                .or(raw.approver_role.as_ref())
                .map(Spanned::span)
                .unwrap_or(0..0);
            self.err(
                src,
                &span,
                format!(
                    "approver_role and grantee_role are both `{}`; decrypt grants need two different roles (two-person rule)",
                    out.approver_role
                ),
            );
        }
        out
    }

    fn actions(
        &mut self,
        src: &Source,
        map: BTreeMap<Spanned<String>, Spanned<String>>,
        allowlist: bool,
    ) -> ActionTable {
        let mut entries: Vec<_> = map.into_iter().collect();
        // `default` first, then the classes in file order.
        entries.sort_by_key(|(k, _)| (k.get_ref() != "default", k.span().start));
        let mut table = ActionTable::default();
        for (key, value) in entries {
            let Some(action) = Action::from_name(value.get_ref()) else {
                self.err(
                    src,
                    &value.span(),
                    format!(
                        "unknown action `{}` for `{}`; use clear, last4, remove, redact or decrypt",
                        value.get_ref(),
                        key.get_ref()
                    ),
                );
                continue;
            };
            if allowlist && action.releases_clear_value() {
                self.err(
                    src,
                    &value.span(),
                    format!(
                        "allowlist roles may not use `{}`: they only see allowed non-red-flag fields; use remove, redact or last4",
                        action.name()
                    ),
                );
            }
            if key.get_ref() == "default" {
                table = ActionTable::uniform(action);
            } else if let Some(class) = FieldClass::from_name(key.get_ref()) {
                table.set(class, action);
            } else {
                let list = class_list();
                self.err(
                    src,
                    &key.span(),
                    format!(
                        "unknown class `{}` in actions; use `default` or one of {list}",
                        key.get_ref()
                    ),
                );
            }
        }
        table
    }

    fn detectors(&mut self, src: &Source, d: Spanned<RawDetectors>) -> DetectorSet {
        let span = d.span();
        match d.into_inner() {
            RawDetectors::Keyword(k) if k == "all" => DetectorSet::ALL,
            RawDetectors::Keyword(k) if k == "none" => DetectorSet::NONE,
            RawDetectors::Keyword(k) => {
                let list = detector_list();
                self.err(
                    src,
                    &span,
                    format!("detectors = \"{k}\" is not valid; use \"all\", \"none\" or a list of: {list}"),
                );
                DetectorSet::ALL
            }
            RawDetectors::List(names) => {
                let mut set = DetectorSet::NONE;
                for n in names {
                    match DetectorKind::from_name(n.get_ref()) {
                        Some(kind) => set = set.with(kind),
                        None => {
                            let list = detector_list();
                            self.err(
                                src,
                                &n.span(),
                                format!(
                                    "unknown detector `{}`; the detectors are {list}",
                                    n.get_ref()
                                ),
                            );
                        }
                    }
                }
                set
            }
        }
    }

    fn principals(
        &mut self,
        list: Vec<(&Source, RawPrincipal)>,
        roles: &BTreeMap<String, Arc<Role>>,
        broken_roles: &HashSet<String>,
    ) -> (Vec<Principal>, HashSet<String>) {
        let mut out = Vec::new();
        let mut names: HashMap<String, String> = HashMap::new();
        let mut certs: HashMap<String, (String, String)> = HashMap::new();
        let mut keys: HashMap<[u8; 32], (String, String)> = HashMap::new();
        for (src, p) in list {
            let before = self.diag_len();
            let name = p.name.get_ref().clone();
            let name_span = p.name.span();
            if !valid_principal_name(&name) {
                self.err(
                    src,
                    &name_span,
                    format!("principal name `{name}` is not valid; use 1-128 letters, digits, '-', '_', '.' or '@'"),
                );
            }
            if let Some(first) = names.get(&name) {
                self.err(
                    src,
                    &name_span,
                    format!("principal `{name}` is already defined at {first}; rename or remove one of them"),
                );
            } else {
                names.insert(name.clone(), src.place(&name_span));
            }
            let role_list = p.roles.unwrap_or_default();
            if role_list.is_empty() {
                self.err(
                    src,
                    &name_span,
                    format!("principal `{name}` has no roles; give it at least one, such as roles = [\"customer-service\"]"),
                );
            }
            let mut role_names: Vec<String> = Vec::new();
            for r in role_list {
                let known = roles.contains_key(r.get_ref()) || broken_roles.contains(r.get_ref());
                if !known && self.complete {
                    let mut defined: Vec<&str> = roles
                        .keys()
                        .chain(broken_roles.iter())
                        .map(String::as_str)
                        .collect();
                    defined.sort_unstable();
                    let hint = if defined.is_empty() {
                        "no role is defined yet".to_owned()
                    } else {
                        format!("use one of: {}", defined.join(", "))
                    };
                    self.err(
                        src,
                        &r.span(),
                        format!(
                            "unknown role `{}`; define it under [roles] or {hint}",
                            r.get_ref()
                        ),
                    );
                }
                if !role_names.contains(r.get_ref()) {
                    role_names.push(r.into_inner());
                }
            }
            let mut cert_names = Vec::new();
            for cn in p.cert_names.unwrap_or_default() {
                let text = cn.get_ref();
                if text.trim().is_empty() || text.chars().any(char::is_control) {
                    self.err(
                        src,
                        &cn.span(),
                        "cert name is empty; give the certificate's CN or DNS name",
                    );
                    continue;
                }
                if let Some((other, at)) = certs.get(text) {
                    if *other != name {
                        self.err(
                            src,
                            &cn.span(),
                            format!("cert name `{text}` already identifies principal `{other}` (at {at}); a certificate must identify one principal"),
                        );
                    }
                    continue;
                }
                certs.insert(text.clone(), (name.clone(), src.place(&cn.span())));
                cert_names.push(cn.into_inner());
            }
            let api_key_sha256 = p.api_key_sha256.and_then(|v| {
                let hash = self.key_hash(src, &v)?;
                if let Some((other, at)) = keys.get(&hash) {
                    self.err(
                        src,
                        &v.span(),
                        format!("this api_key_sha256 is already given to principal `{other}` (at {at}); each API key must identify one principal"),
                    );
                    return None;
                }
                keys.insert(hash, (name.clone(), src.place(&v.span())));
                Some(hash)
            });
            let cert_issuer = p.cert_issuer.and_then(|issuer| {
                let dn = crate::identity::normalize_dn(issuer.get_ref());
                if dn.is_empty() || !dn.split(", ").all(|a| a.contains('=')) {
                    self.err(
                        src,
                        &issuer.span(),
                        "cert_issuer must be the issuing CA's distinguished name, such as \"CN=Client CA, O=City\" (values without `,`, `+` or `=`)",
                    );
                    return None;
                }
                Some(dn)
            });
            let window = self.window(src, &name, &p.valid_from, &p.valid_until, p.hours);
            let may_delegate = p.may_delegate.unwrap_or(false);
            let delegates = match p.delegates {
                Some(d) if !may_delegate => {
                    self.err(
                        src,
                        &d.span(),
                        format!("principal `{name}` has delegates but not may_delegate = true; add may_delegate = true or remove delegates"),
                    );
                    None
                }
                Some(d) => self.delegates(src, &name, d),
                None if may_delegate => {
                    self.err(
                        src,
                        &p.name.span(),
                        format!("principal `{name}` may delegate but does not say for whom; add delegates = {{ pattern = '^[a-z][a-z0-9._-]{{1,63}}$' }} (the staff user ids it may name) or delegates = {{ names = [\"…\"] }}"),
                    );
                    None
                }
                None => None,
            };
            if self.diag_len() == before {
                out.push(Principal {
                    name,
                    roles: role_names,
                    cert_names,
                    cert_issuer,
                    api_key_sha256,
                    may_delegate,
                    delegates,
                    revoked: p.revoked.unwrap_or(false),
                    window,
                });
            }
        }
        (out, names.into_keys().collect())
    }

    /// A delegating principal's `delegates`; `None` after reporting errors.
    fn delegates(
        &mut self,
        src: &Source,
        principal: &str,
        raw: Spanned<RawDelegates>,
    ) -> Option<Delegates> {
        let span = raw.span();
        let raw = raw.into_inner();
        let before = self.diag_len();
        let mut names = std::collections::BTreeSet::new();
        for n in raw.names.iter().flatten() {
            let text = n.get_ref();
            if !Delegates::well_formed(text) {
                self.err(
                    src,
                    &n.span(),
                    format!("delegate name is not valid; use 1 to {} letters, digits, spaces or '@', '.', '_', '-', '+', with at most {} digits (a longer digit run looks like an SSN or card number)", Delegates::MAX_NAME_BYTES, Delegates::MAX_DIGITS),
                );
                continue;
            }
            names.insert(text.clone());
        }
        let pattern = raw.pattern.as_ref().and_then(|p| {
            let text = p.get_ref();
            if text.is_empty() || text.len() > UnmaskRule::LIMIT_PATTERN_BYTES {
                self.err(
                    src,
                    &p.span(),
                    format!(
                        "delegates.pattern must be 1 to {} bytes",
                        UnmaskRule::LIMIT_PATTERN_BYTES
                    ),
                );
                return None;
            }
            // The whole name must match, however the pattern is anchored.
            let built = regex::RegexBuilder::new(&format!("^(?:{text})$"))
                .unicode(false)
                .size_limit(1 << 20)
                .dfa_size_limit(1 << 20)
                .build();
            match built {
                Ok(re) => Some((text.clone(), re)),
                Err(e) => {
                    let detail = regex_error_summary(&e);
                    self.err(
                        src,
                        &p.span(),
                        format!("delegates.pattern is not a valid regular expression: {detail}; patterns use ASCII classes (write [0-9], not \\d with Unicode)"),
                    );
                    None
                }
            }
        });
        if names.is_empty() && raw.pattern.is_none() && self.diag_len() == before {
            self.err(
                src,
                &span,
                format!("delegates of principal `{principal}` admit nobody; give names = [\"…\"] and/or pattern = '…'"),
            );
        }
        let max_per_day = match &raw.max_per_day {
            None => Delegates::DEFAULT_MAX_PER_DAY,
            Some(m) => match u32::try_from(*m.get_ref()) {
                Ok(n) if (1..=Delegates::LIMIT_PER_DAY).contains(&n) => n,
                _ => {
                    self.err(
                        src,
                        &m.span(),
                        format!(
                            "delegates.max_per_day must be 1 to {}",
                            Delegates::LIMIT_PER_DAY
                        ),
                    );
                    Delegates::DEFAULT_MAX_PER_DAY
                }
            },
        };
        (self.diag_len() == before).then_some(Delegates {
            names,
            pattern,
            max_per_day,
        })
    }

    /// A principal's `valid_from`, `valid_until` and `hours`.
    fn window(
        &mut self,
        src: &Source,
        name: &str,
        from: &Option<Spanned<toml::Value>>,
        until: &Option<Spanned<toml::Value>>,
        hours: Option<Spanned<RawHours>>,
    ) -> AccessWindow {
        let valid_from = from
            .as_ref()
            .and_then(|v| self.instant(src, v, "valid_from"));
        let valid_until = until
            .as_ref()
            .and_then(|v| self.instant(src, v, "valid_until"));
        if let (Some(f), Some(u), Some(at)) = (valid_from, valid_until, until) {
            if u <= f {
                self.err(
                    src,
                    &at.span(),
                    format!("valid_until of principal `{name}` is not after its valid_from; the principal could never call: correct one of them"),
                );
            }
        }
        AccessWindow {
            valid_from,
            valid_until,
            hours: hours.and_then(|h| self.hours(src, h)),
        }
    }

    /// An RFC 3339 instant, written as a string or a TOML offset date-time.
    fn instant(&mut self, src: &Source, v: &Spanned<toml::Value>, key: &str) -> Option<SystemTime> {
        const FIX: &str = "write an RFC 3339 date-time with an offset, such as \"2027-06-30T23:59:59-07:00\" or \"2027-07-01T00:00:00Z\"";
        let text = match v.get_ref() {
            toml::Value::String(s) => s.clone(),
            toml::Value::Datetime(d) => d.to_string(),
            other => {
                self.err(
                    src,
                    &v.span(),
                    format!(
                        "{key} must be a date-time (found {}); {FIX}",
                        other.type_str()
                    ),
                );
                return None;
            }
        };
        let parsed = text
            .trim()
            .parse::<jiff::Timestamp>()
            .ok()
            .and_then(|t| SystemTime::try_from(t).ok());
        if parsed.is_none() {
            self.err(
                src,
                &v.span(),
                format!("{key} `{text}` is not a date-time with an offset; {FIX}"),
            );
        }
        parsed
    }

    /// `hours = { tz, days, from, until }`.
    fn hours(&mut self, src: &Source, raw: Spanned<RawHours>) -> Option<DailyHours> {
        let table_span = raw.span();
        let raw = raw.into_inner();
        let before = self.diag_len();
        let tz = self.time_zone(src, &raw.tz, "hours.tz");
        let mut days = DaySet::default();
        match &raw.days {
            None => days = DaySet::ALL,
            Some(list) => {
                for d in list {
                    match DaySet::day_from_name(d.get_ref()) {
                        Some(day) => days = days.with(day),
                        None => self.err(
                            src,
                            &d.span(),
                            format!(
                                "unknown day `{}` in hours.days; use {}",
                                d.get_ref(),
                                DaySet::NAMES.join(", ")
                            ),
                        ),
                    }
                }
                if list.is_empty() {
                    self.err(
                        src,
                        &table_span,
                        "hours.days is empty, so the principal could never call; list the allowed days, such as days = [\"mon\", \"tue\"], or remove `days` for every day",
                    );
                }
            }
        }
        let from = self.time_of_day(src, &raw.from, "hours.from", false);
        let until = self.time_of_day(src, &raw.until, "hours.until", true);
        if from.is_some() && from == until {
            // Empty or the whole day: ambiguous either way.
            self.err(
                src,
                &raw.until.span(),
                "hours.until equals hours.from; give the end of the window (\"24:00\" for midnight), or remove `hours` to allow every hour",
            );
        }
        if self.diag_len() != before {
            return None;
        }
        Some(DailyHours {
            tz: tz?,
            tz_name: raw.tz.into_inner(),
            days,
            from_minute: from?,
            until_minute: until?,
        })
    }

    /// An IANA time zone name from the bundled database.
    fn time_zone(
        &mut self,
        src: &Source,
        name: &Spanned<String>,
        key: &str,
    ) -> Option<jiff::tz::TimeZone> {
        match jiff::tz::TimeZone::get(name.get_ref()) {
            Ok(tz) => Some(tz),
            Err(_) => {
                self.err(
                    src,
                    &name.span(),
                    format!(
                        "{key}: unknown time zone `{}`; use an IANA name such as \"America/Los_Angeles\" or \"UTC\"",
                        name.get_ref()
                    ),
                );
                None
            }
        }
    }

    /// `HH:MM` (24-hour) as minutes after midnight; `24:00` only when
    /// `end` is true.
    fn time_of_day(
        &mut self,
        src: &Source,
        v: &Spanned<String>,
        key: &str,
        end: bool,
    ) -> Option<u16> {
        let text = v.get_ref().trim();
        let parsed = text.split_once(':').and_then(|(h, m)| {
            let digits = |s: &str, n: std::ops::RangeInclusive<usize>| {
                n.contains(&s.len()) && s.bytes().all(|b| b.is_ascii_digit())
            };
            if !digits(h, 1..=2) || !digits(m, 2..=2) {
                return None;
            }
            let (h, m) = (h.parse::<u16>().ok()?, m.parse::<u16>().ok()?);
            let minutes = h * 60 + m;
            let ok = m < 60 && (h < 24 || (end && minutes == 24 * 60));
            ok.then_some(minutes)
        });
        if parsed.is_none() {
            let also = if end { " (\"24:00\" = midnight)" } else { "" };
            self.err(
                src,
                &v.span(),
                format!(
                    "{key} `{text}` is not a time of day; write HH:MM on a 24-hour clock{also}, such as \"07:00\""
                ),
            );
        }
        parsed
    }

    /// `[revocations]` of every file, merged.
    fn revocations(
        &mut self,
        list: Vec<(&Source, RawRevocations)>,
        principal_names: &HashSet<String>,
        names_complete: bool,
    ) -> Revocations {
        let mut out = Revocations::default();
        for (src, raw) in list {
            for p in raw.principals.iter().flatten() {
                let name = p.get_ref();
                if names_complete && !principal_names.contains(name) {
                    self.err(
                        src,
                        &p.span(),
                        format!(
                            "unknown principal `{name}` in revocations.principals; a misspelt name would leave the principal it means active: use a name defined under [[principals]]"
                        ),
                    );
                    continue;
                }
                out.principals.insert(name.clone());
            }
            if let Some(keys) = &raw.api_key_sha256 {
                match keys.get_ref() {
                    RawKeyList::NotList => self.err(
                        src,
                        &keys.span(),
                        "revocations.api_key_sha256 must be a list of hexadecimal SHA-256 strings, such as [\"9f86…\"]; the value is not repeated here",
                    ),
                    RawKeyList::List(items) => {
                        for item in items {
                            if let Some(hash) = self.key_hash(src, item) {
                                out.api_key_sha256.insert(hash);
                            }
                        }
                    }
                }
            }
            for cert in raw.certs.iter().flatten() {
                let issuer = crate::identity::normalize_dn(&cert.get_ref().issuer);
                match normalize_serial(&cert.get_ref().serial) {
                    Some(serial) if !issuer.is_empty() => {
                        out.cert_issuer_serials.insert((issuer, serial));
                    }
                    _ => self.err(
                        src,
                        &cert.span(),
                        "a revoked certificate needs issuer (the CA's distinguished name) and serial (hexadecimal, as `openssl x509 -noout -serial` prints it)",
                    ),
                }
            }
            for serial in raw.cert_serials.iter().flatten() {
                match normalize_serial(serial.get_ref()) {
                    Some(s) => {
                        out.cert_serials.insert(s);
                    }
                    None => self.err(
                        src,
                        &serial.span(),
                        format!(
                            "cert serial `{}` is not a hexadecimal serial number of up to 20 octets; write it as `openssl x509 -noout -serial` prints it, such as \"1A2B3C4D\" (colons allowed)",
                            serial.get_ref()
                        ),
                    ),
                }
            }
        }
        out
    }

    /// `[admit]`, defaults filled in; the freeze role is checked against
    /// the compiled roles.
    fn admit_settings(
        &mut self,
        raw: Option<(&Source, Spanned<RawAdmit>)>,
        roles: &BTreeMap<String, Arc<Role>>,
        broken_roles: &HashSet<String>,
    ) -> AdmitSettings {
        let mut out = AdmitSettings::default();
        let Some((src, raw)) = raw else {
            return out;
        };
        let raw = raw.into_inner();
        if let Some(tz) = &raw.budget_tz {
            if let Some(zone) = self.time_zone(src, tz, "admit.budget_tz") {
                out.budget_tz = zone;
                out.budget_tz_name = tz.get_ref().clone();
            }
        }
        if let Some(role) = &raw.freeze_role {
            let name = role.get_ref();
            let known = roles.contains_key(name) || broken_roles.contains(name);
            if !known && self.complete {
                self.err(
                    src,
                    &role.span(),
                    format!("unknown role `{name}` in admit.freeze_role; define it under [roles] or name a defined role"),
                );
            }
            out.freeze_role = name.clone();
        }
        if let Some(list) = &raw.metrics_roles {
            out.metrics_roles.clear();
            for role in list {
                let name = role.get_ref();
                let known = roles.contains_key(name) || broken_roles.contains(name);
                if !known && self.complete {
                    self.err(
                        src,
                        &role.span(),
                        format!("unknown role `{name}` in admit.metrics_roles; define it under [roles] or name a defined role"),
                    );
                }
                if !out.metrics_roles.contains(name) {
                    out.metrics_roles.push(name.clone());
                }
            }
        }
        out
    }

    /// Parses a key hash without ever repeating it in a message.
    fn key_hash(&mut self, src: &Source, v: &Spanned<toml::Value>) -> Option<[u8; 32]> {
        const FIX: &str = "write the SHA-256 of the API key as 64 hexadecimal characters (as `sha256sum` prints it); the value is not repeated here";
        let toml::Value::String(s) = v.get_ref() else {
            self.err(
                src,
                &v.span(),
                format!("api_key_sha256 must be a string; {FIX}"),
            );
            return None;
        };
        let mut out = [0u8; 32];
        if s.len() != 64 || hex::decode_to_slice(s, &mut out).is_err() {
            let what = if s.len() == 64 {
                "has a character that is not hexadecimal".to_owned()
            } else {
                format!("has {} characters, not 64", s.chars().count())
            };
            self.err(src, &v.span(), format!("api_key_sha256 {what}; {FIX}"));
            return None;
        }
        Some(out)
    }
}
