//! Route and method matching for the routes the core owns (users). Matching is on the exact
//! raw path (no trailing-slash trimming, no percent-decoding; the query is not part of
//! `Uri::path`) — docs/DECISIONS.md #4. The lifecycle routes added after the contract (`enable`,
//! `disable`, `reset-quota`) also match with one trailing slash, as telemt 3.4 does.

use http::Method;

use crate::envelope::ApiError;

const USERS: &str = "/v1/users";
const USERS_PREFIX: &str = "/v1/users/";
const STATS_USERS: &str = "/v1/stats/users";
const ROTATE_SUFFIX: &str = "/rotate-secret";

/// Lifecycle actions: `POST /v1/users/{u}/<action>` (a trailing `/` is accepted).
const ACTIONS: [(&str, UserAction); 3] = [
    ("/enable", UserAction::Enable),
    ("/disable", UserAction::Disable),
    ("/reset-quota", UserAction::ResetQuota),
];

/// A lifecycle action on one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserAction {
    Enable,
    Disable,
    ResetQuota,
}

/// A matched users route. Borrowed usernames come straight from the raw path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UserRoute<'a> {
    List,
    Create,
    Get(&'a str),
    Patch(&'a str),
    Delete(&'a str),
    RotateSecret(&'a str),
    Action(&'a str, UserAction),
}

impl UserRoute<'_> {
    /// Mutating routes are subject to the `read_only` gate.
    pub fn is_mutating(&self) -> bool {
        matches!(
            self,
            Self::Create
                | Self::Patch(_)
                | Self::Delete(_)
                | Self::RotateSecret(_)
                | Self::Action(..)
        )
    }
}

/// Outcome of matching a request against the users routes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Matched<'a> {
    /// A users route handles the request.
    Route(UserRoute<'a>),
    /// The path belongs to the users routes but the method does not (404 or 405).
    Refused(ApiError),
    /// Not a users path: the caller tries the read-only views, then answers 404.
    NotUsers,
}

/// `{u}` is a user segment only when non-empty and free of `/`.
fn user_segment(rest: &str) -> Option<&str> {
    (!rest.is_empty() && !rest.contains('/')).then_some(rest)
}

pub fn match_users<'a>(method: &Method, path: &'a str) -> Matched<'a> {
    if path == USERS {
        return match *method {
            Method::GET => Matched::Route(UserRoute::List),
            Method::POST => Matched::Route(UserRoute::Create),
            _ => Matched::Refused(ApiError::route_not_found()),
        };
    }
    if path == STATS_USERS {
        return match *method {
            Method::GET => Matched::Route(UserRoute::List),
            _ => Matched::Refused(ApiError::route_not_found()),
        };
    }
    let Some(rest) = path.strip_prefix(USERS_PREFIX) else {
        return Matched::NotUsers;
    };
    if let Some(user) = rest.strip_suffix(ROTATE_SUFFIX).and_then(user_segment) {
        return match *method {
            Method::POST => Matched::Route(UserRoute::RotateSecret(user)),
            _ => Matched::Refused(ApiError::route_not_found()),
        };
    }
    let trimmed = rest.strip_suffix('/').unwrap_or(rest);
    for (suffix, action) in ACTIONS {
        if let Some(user) = trimmed.strip_suffix(suffix).and_then(user_segment) {
            return match *method {
                Method::POST => Matched::Route(UserRoute::Action(user, action)),
                _ => Matched::Refused(ApiError::route_not_found()),
            };
        }
    }
    let Some(user) = user_segment(rest) else {
        return Matched::Refused(ApiError::route_not_found());
    };
    match *method {
        Method::GET => Matched::Route(UserRoute::Get(user)),
        Method::PATCH => Matched::Route(UserRoute::Patch(user)),
        Method::DELETE => Matched::Route(UserRoute::Delete(user)),
        Method::POST => Matched::Refused(ApiError::route_not_found()),
        _ => Matched::Refused(ApiError::method_not_allowed()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::StatusCode;

    fn status(m: Method, p: &str) -> Option<StatusCode> {
        match match_users(&m, p) {
            Matched::Route(_) => Some(StatusCode::OK),
            Matched::Refused(e) => Some(e.status),
            Matched::NotUsers => None,
        }
    }

    #[test]
    fn user_routes() {
        assert_eq!(
            match_users(&Method::GET, "/v1/users"),
            Matched::Route(UserRoute::List)
        );
        assert_eq!(
            match_users(&Method::GET, "/v1/stats/users"),
            Matched::Route(UserRoute::List)
        );
        assert_eq!(
            match_users(&Method::POST, "/v1/users"),
            Matched::Route(UserRoute::Create)
        );
        assert_eq!(
            match_users(&Method::GET, "/v1/users/a"),
            Matched::Route(UserRoute::Get("a"))
        );
        assert_eq!(
            match_users(&Method::PATCH, "/v1/users/a%20b"),
            Matched::Route(UserRoute::Patch("a%20b"))
        );
        assert_eq!(
            match_users(&Method::DELETE, "/v1/users/a"),
            Matched::Route(UserRoute::Delete("a"))
        );
        assert_eq!(
            match_users(&Method::POST, "/v1/users/a/rotate-secret"),
            Matched::Route(UserRoute::RotateSecret("a"))
        );
    }

    #[test]
    fn edge_cases() {
        assert_eq!(
            status(Method::GET, "/v1/users/"),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(Method::GET, "/v1/users/a/"),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(Method::GET, "/v1/users/a/b"),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(Method::POST, "/v1/users/a"),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(Method::PUT, "/v1/users/a"),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(
            status(Method::HEAD, "/v1/users/a"),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(
            status(Method::OPTIONS, "/v1/users/a"),
            Some(StatusCode::METHOD_NOT_ALLOWED)
        );
        assert_eq!(
            status(Method::PUT, "/v1/users"),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(Method::POST, "/v1/stats/users"),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(Method::GET, "/v1/users/a/rotate-secret"),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(Method::POST, "/v1/users//rotate-secret"),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(Method::POST, "/v1/users/a/b/rotate-secret"),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(status(Method::GET, "/v1/user"), None);
        assert_eq!(status(Method::GET, "/v1/usersx"), None);
        assert_eq!(status(Method::GET, "/v1/health"), None);
        // A user literally named "rotate-secret" is still a plain user route.
        assert_eq!(
            match_users(&Method::GET, "/v1/users/rotate-secret"),
            Matched::Route(UserRoute::Get("rotate-secret"))
        );
    }

    #[test]
    fn lifecycle_actions() {
        for (path, action) in [
            ("/v1/users/a/enable", UserAction::Enable),
            ("/v1/users/a/disable/", UserAction::Disable),
            ("/v1/users/a/reset-quota", UserAction::ResetQuota),
            ("/v1/users/a/reset-quota/", UserAction::ResetQuota),
        ] {
            assert_eq!(
                match_users(&Method::POST, path),
                Matched::Route(UserRoute::Action("a", action)),
                "{path}"
            );
            assert_eq!(status(Method::GET, path), Some(StatusCode::NOT_FOUND));
        }
        assert_eq!(
            status(Method::POST, "/v1/users//enable"),
            Some(StatusCode::NOT_FOUND)
        );
        assert_eq!(
            status(Method::POST, "/v1/users/a/enable//"),
            Some(StatusCode::NOT_FOUND)
        );
        // A user literally named "enable" keeps its plain route.
        assert_eq!(
            match_users(&Method::GET, "/v1/users/enable"),
            Matched::Route(UserRoute::Get("enable"))
        );
        assert!(UserRoute::Action("a", UserAction::ResetQuota).is_mutating());
    }

    #[test]
    fn mutating() {
        assert!(!UserRoute::List.is_mutating());
        assert!(!UserRoute::Get("a").is_mutating());
        assert!(UserRoute::Create.is_mutating());
        assert!(UserRoute::Patch("a").is_mutating());
        assert!(UserRoute::Delete("a").is_mutating());
        assert!(UserRoute::RotateSecret("a").is_mutating());
    }
}
