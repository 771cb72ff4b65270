//! Route templates: `/accounts/{id}`, `/files/*`, matched against request paths.

use std::cmp::Ordering;

/// One segment of a route template.
#[derive(Clone, Debug, PartialEq, Eq)]
enum Segment {
    /// Matches exactly this segment (case-sensitive).
    Literal(String),
    /// `{name}`: matches any one non-empty segment.
    Param(String),
    /// `*` as the last segment: matches one or more remaining segments.
    Rest,
}

impl Segment {
    /// Literal segments beat parameters, which beat `*`.
    fn rank(&self) -> u8 {
        match self {
            Segment::Literal(_) => 2,
            Segment::Param(_) => 1,
            Segment::Rest => 0,
        }
    }
}

/// A named route: a path template and how its responses are treated.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// The name grants, logs and metrics use.
    pub name: String,
    /// The template as written: `/accounts/{id}`.
    pub template: String,
    /// Responses may carry red-flag data (`Range` and conditional headers are dropped).
    pub red_flag: bool,
    /// A bulk export route (NDJSON/CSV).
    pub export: bool,
    /// Content types passed without rewriting, lower case (`image/png`).
    pub passthrough_types: Vec<String>,
    /// `page_param` and `max_page_size`: the page size cap, if any.
    pub page_cap: Option<super::PageCap>,
    segments: Vec<Segment>,
}

impl Route {
    /// Compiles a route; the error says what is wrong with the template and how to fix it.
    pub(crate) fn new(
        name: String,
        template: String,
        red_flag: bool,
        export: bool,
        passthrough_types: Vec<String>,
    ) -> Result<Route, String> {
        let segments = parse_template(&template)?;
        Ok(Route {
            name,
            template,
            red_flag,
            export,
            passthrough_types,
            page_cap: None,
            segments,
        })
    }

    /// The parameters of `path` when it matches this route (`[("id", "42")]`
    /// for `/accounts/42` and `/accounts/{id}`); `None` when it does not match.
    /// `*` captures nothing.
    pub fn params<'r, 'p>(&'r self, path: &'p str) -> Option<Vec<(&'r str, &'p str)>> {
        let rest = path.strip_prefix('/')?;
        let mut parts = if rest.is_empty() { None } else { Some(rest) };
        let mut params = Vec::new();
        for segment in &self.segments {
            let current = parts?;
            if *segment == Segment::Rest {
                return if current.is_empty() {
                    None
                } else {
                    Some(params)
                };
            }
            let (part, tail) = match current.split_once('/') {
                Some((part, tail)) => (part, Some(tail)),
                None => (current, None),
            };
            match segment {
                Segment::Literal(lit) if lit == part => {}
                Segment::Param(name) if !part.is_empty() => params.push((name.as_str(), part)),
                _ => return None,
            }
            parts = tail;
        }
        match parts {
            None => Some(params),
            Some(_) => None,
        }
    }

    /// True when `path` matches this route.
    pub fn matches(&self, path: &str) -> bool {
        self.params(path).is_some()
    }

    /// Orders routes from most to least specific: compared segment by segment,
    /// a literal beats a parameter, which beats `*`.
    pub(crate) fn specificity_cmp(&self, other: &Route) -> Ordering {
        let a = self.segments.iter().map(Segment::rank);
        let b = other.segments.iter().map(Segment::rank);
        b.cmp(a)
    }

    /// The template with parameter names erased: two routes with the same
    /// shape match the same paths equally well, which is ambiguous.
    pub(crate) fn shape(&self) -> String {
        if self.segments.is_empty() {
            return "/".to_owned();
        }
        let mut s = String::new();
        for segment in &self.segments {
            s.push('/');
            match segment {
                Segment::Literal(lit) => s.push_str(lit),
                Segment::Param(_) => s.push_str("{}"),
                Segment::Rest => s.push('*'),
            }
        }
        s
    }
}

fn is_literal_byte(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"-._~!$&'()+,;=:@".contains(&b)
}

fn parse_template(template: &str) -> Result<Vec<Segment>, String> {
    let Some(rest) = template.strip_prefix('/') else {
        return Err(format!("route path `{template}` must start with '/'"));
    };
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let parts: Vec<&str> = rest.split('/').collect();
    let mut segments = Vec::with_capacity(parts.len());
    for (i, part) in parts.iter().enumerate() {
        if part.is_empty() {
            return Err(format!(
                "route path `{template}` has an empty segment; remove the doubled or trailing '/'"
            ));
        }
        if *part == "*" {
            if i + 1 != parts.len() {
                return Err(format!(
                    "route path `{template}`: `*` may only be the last segment (it matches the rest of the path)"
                ));
            }
            segments.push(Segment::Rest);
        } else if let Some(name) = part.strip_prefix('{').and_then(|p| p.strip_suffix('}')) {
            let valid = name
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
                && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
            if !valid {
                return Err(format!(
                    "route path `{template}`: parameter `{{{name}}}` needs a name of letters, digits and '_' (such as `{{id}}`)"
                ));
            }
            if segments.contains(&Segment::Param(name.to_owned())) {
                return Err(format!(
                    "route path `{template}`: parameter `{{{name}}}` appears twice; give each parameter its own name"
                ));
            }
            segments.push(Segment::Param(name.to_owned()));
        } else if part.bytes().all(is_literal_byte) {
            segments.push(Segment::Literal((*part).to_owned()));
        } else if part.contains(['{', '}']) {
            return Err(format!(
                "route path `{template}`: segment `{part}` mixes text and a parameter; a parameter must be a whole segment (`/{{id}}`)"
            ));
        } else {
            return Err(format!(
                "route path `{template}`: segment `{part}` has a character not allowed in a route (use letters, digits and -._~!$&'()+,;=:@; no '*' inside a segment, no query, no percent-encoding)"
            ));
        }
    }
    Ok(segments)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(t: &str) -> Route {
        Route::new("r".to_owned(), t.to_owned(), true, false, Vec::new()).unwrap()
    }

    #[test]
    fn literal_param_and_rest_segments_match() {
        type Params = Option<&'static [(&'static str, &'static str)]>;
        let table: &[(&str, &str, Params)] = &[
            ("/accounts", "/accounts", Some(&[])),
            ("/accounts", "/accounts/1", None),
            ("/accounts", "/account", None),
            ("/accounts", "/", None),
            ("/accounts/{id}", "/accounts/42", Some(&[("id", "42")])),
            ("/accounts/{id}", "/accounts", None),
            ("/accounts/{id}", "/accounts/", None),
            ("/accounts/{id}", "/accounts/42/x", None),
            ("/a/{x}/b/{y}", "/a/1/b/2", Some(&[("x", "1"), ("y", "2")])),
            ("/files/*", "/files/a/b/c", Some(&[])),
            ("/files/*", "/files/a", Some(&[])),
            ("/files/*", "/files", None),
            ("/files/*", "/files/", None),
            ("/", "/", Some(&[])),
            ("/", "/x", None),
            ("/*", "/x/y", Some(&[])),
            ("/accounts", "accounts", None),
        ];
        for (t, path, want) in table {
            let r = route(t);
            let got = r.params(path);
            assert_eq!(got.as_deref(), *want, "{t} vs {path}");
        }
    }

    #[test]
    fn bad_templates_are_refused() {
        for t in [
            "accounts",
            "/accounts/",
            "//x",
            "/a/*/b",
            "/a/{}",
            "/a/{1x}",
            "/a/{id}/{id}",
            "/a/x{id}",
            "/a?b=1",
            "/a/%20",
            "/a/b*",
            "/a b",
        ] {
            assert!(parse_template(t).is_err(), "{t}");
        }
    }

    #[test]
    fn specificity_orders_literal_param_rest() {
        let mut routes = [
            route("/*"),
            route("/a/*"),
            route("/a/{x}"),
            route("/a/b"),
            route("/{x}/b"),
        ];
        routes.sort_by(Route::specificity_cmp);
        let order: Vec<&str> = routes.iter().map(|r| r.template.as_str()).collect();
        assert_eq!(order, ["/a/b", "/a/{x}", "/a/*", "/{x}/b", "/*"]);
        assert_eq!(route("/a/{x}").shape(), route("/a/{y}").shape());
        assert_ne!(route("/a/{x}").shape(), route("/a/*").shape());
    }
}
