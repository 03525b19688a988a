//! Number rewriting: the plan conversions, and putting a new number (and
//! `user=phone`) into a URI or a name-addr while keeping every other byte.

use palisade_config::normalization::{NumberPlan, NumberRewrite};
use palisade_sip::{NameAddr, Uri};

/// Applies `rw` to `number`; `None` when nothing changes or the result is
/// not a number we would put on the wire.
pub(crate) fn rewrite_number(rw: &NumberRewrite, number: &str) -> Option<String> {
    let out = match rw {
        NumberRewrite::ToE164(p) => to_e164(p, number)?,
        NumberRewrite::ToNational(p) => to_national(p, number)?,
        NumberRewrite::StripPrefix(pre) => number.strip_prefix(pre.as_str())?.to_owned(),
        NumberRewrite::AddPrefix(pre) => format!("{pre}{number}"),
        NumberRewrite::Regex { regex, replace } => {
            if !regex.is_match(number) {
                return None;
            }
            regex.replace(number, replace.as_str()).into_owned()
        }
    };
    (out != number && valid_number(&out)).then_some(out)
}

/// What a rewritten number may contain: a user part of digits, letters
/// (`anonymous`), `+` first, `*`, `#` and visual separators.
pub(crate) fn valid_number(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= 64
        && n.bytes().enumerate().all(|(i, b)| {
            b.is_ascii_alphanumeric()
                || matches!(b, b'*' | b'#' | b'-' | b'.' | b'(' | b')')
                || (b == b'+' && i == 0)
        })
}

fn to_e164(p: &NumberPlan, n: &str) -> Option<String> {
    if n.starts_with('+') {
        return None;
    }
    if let Some(rest) = n.strip_prefix(p.international_prefix.as_str())
        && rest.starts_with(|c: char| c.is_ascii_digit() && c != '0')
    {
        return Some(format!("+{rest}"));
    }
    if !p.national_prefix.is_empty()
        && let Some(rest) = n.strip_prefix(p.national_prefix.as_str())
        && rest.starts_with(|c: char| c.is_ascii_digit() && c != '0')
    {
        return Some(format!("+{}{rest}", p.country_code));
    }
    None
}

fn to_national(p: &NumberPlan, n: &str) -> Option<String> {
    let intl = if let Some(rest) = n.strip_prefix('+') {
        rest
    } else {
        n.strip_prefix(p.international_prefix.as_str())
            .filter(|r| r.starts_with(|c: char| c.is_ascii_digit() && c != '0'))?
    };
    if let Some(rest) = intl.strip_prefix(p.country_code.as_str()) {
        return Some(format!("{}{rest}", p.national_prefix));
    }
    if n.starts_with('+') {
        return Some(format!("{}{intl}", p.international_prefix));
    }
    None
}

/// Byte offset of `sub` inside `s` (`sub` must borrow from `s`).
fn offset(s: &str, sub: &str) -> Option<usize> {
    let o = (sub.as_ptr() as usize).checked_sub(s.as_ptr() as usize)?;
    (o + sub.len() <= s.len()).then_some(o)
}

/// The number a URI carries (SIP user part without user parameters, or the
/// TEL number).
pub(crate) fn uri_number(uri: &str) -> Option<&str> {
    Uri::parse(uri).ok()?.number()
}

/// Rewrites the number of `uri` with `f` and sets or removes `user=phone`.
/// `None` when nothing changes.
pub(crate) fn rewrite_uri(
    uri: &str,
    f: &dyn Fn(&str) -> Option<String>,
    user_phone: Option<bool>,
) -> Option<String> {
    let parsed = Uri::parse(uri).ok()?;
    let mut out = uri.to_owned();
    let mut changed = false;
    // The number first (it sits before the URI parameters).
    if let Some(num) = parsed.number()
        && let Some(new) = f(num)
        && let Some(at) = offset(uri, num)
    {
        out.replace_range(at..at + num.len(), &new);
        changed = true;
    }
    if let (Some(want), Uri::Sip(_)) = (user_phone, parsed) {
        let edit = {
            let Ok(Uri::Sip(s)) = Uri::parse(&out) else {
                return changed.then_some(out);
            };
            let params = s.params.as_str();
            let pieces: Vec<&str> = params.split(';').filter(|p| !p.is_empty()).collect();
            let is_user = |p: &&str| {
                p.split('=')
                    .next()
                    .is_some_and(|n| n.trim().eq_ignore_ascii_case("user"))
            };
            let has_phone = pieces.iter().any(|p| {
                is_user(p)
                    && p.split_once('=')
                        .is_some_and(|(_, v)| v.trim().eq_ignore_ascii_case("phone"))
            });
            if want == has_phone {
                None
            } else {
                let mut kept: Vec<&str> = pieces.iter().copied().filter(|p| !is_user(p)).collect();
                if want {
                    kept.insert(0, "user=phone");
                }
                let new_params = if kept.is_empty() {
                    String::new()
                } else {
                    format!(";{}", kept.join(";"))
                };
                // Replace `;params`, or insert before `?headers` / at the end.
                let range = if params.is_empty() {
                    let at = match s.headers {
                        Some(h) => offset(&out, h)?.checked_sub(1)?,
                        None => out.len(),
                    };
                    (at, at)
                } else {
                    let at = offset(&out, params)?;
                    (at.checked_sub(1)?, at + params.len())
                };
                Some((range, new_params))
            }
        };
        if let Some(((start, end), new_params)) = edit {
            out.replace_range(start..end, &new_params);
            changed = true;
        }
    }
    changed.then_some(out)
}

/// Rewrites the URI inside a name-addr header value (From, To, PAI,
/// Diversion element), keeping display name and header parameters. `None`
/// when nothing changes.
pub(crate) fn rewrite_name_addr(
    value: &str,
    f: &dyn Fn(&str) -> Option<String>,
    user_phone: Option<bool>,
) -> Option<String> {
    let na = NameAddr::parse(value).ok()?;
    let new_uri = rewrite_uri(na.uri_str, f, user_phone)?;
    let at = offset(value, na.uri_str)?;
    let mut out = String::with_capacity(value.len() + 16);
    let needs_brackets = !na.bracketed && new_uri.bytes().any(|b| matches!(b, b';' | b'?' | b','));
    out.push_str(&value[..at]);
    if needs_brackets {
        out.push('<');
        out.push_str(&new_uri);
        out.push('>');
    } else {
        out.push_str(&new_uri);
    }
    out.push_str(&value[at + na.uri_str.len()..]);
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn de() -> NumberPlan {
        NumberPlan {
            country_code: "49".into(),
            national_prefix: "0".into(),
            international_prefix: "00".into(),
        }
    }

    #[test]
    fn plan_conversions() {
        let p = de();
        assert_eq!(to_e164(&p, "08912345").as_deref(), Some("+498912345"));
        assert_eq!(
            to_e164(&p, "0014155550100").as_deref(),
            Some("+14155550100")
        );
        assert_eq!(to_e164(&p, "+498912345"), None);
        assert_eq!(to_e164(&p, "12345"), None);
        assert_eq!(to_national(&p, "+498912345").as_deref(), Some("08912345"));
        assert_eq!(
            to_national(&p, "+14155550100").as_deref(),
            Some("0014155550100")
        );
        assert_eq!(to_national(&p, "00498912345").as_deref(), Some("08912345"));
        assert_eq!(to_national(&p, "08912345"), None);
        assert_eq!(to_national(&p, "0014155550100"), None);
    }

    #[test]
    fn uri_rewrites_keep_the_rest() {
        let f = |n: &str| to_e164(&de(), n);
        assert_eq!(
            rewrite_uri("sip:030123@1.2.3.4:5060;transport=tcp", &f, None).as_deref(),
            Some("sip:+4930123@1.2.3.4:5060;transport=tcp")
        );
        assert_eq!(
            rewrite_uri("sip:030123@h", &f, Some(true)).as_deref(),
            Some("sip:+4930123@h;user=phone")
        );
        assert_eq!(
            rewrite_uri("sip:+4930123@h;user=phone;lr?X=1", &|_| None, Some(false)).as_deref(),
            Some("sip:+4930123@h;lr?X=1")
        );
        assert_eq!(
            rewrite_uri("sip:+4930123@h;lr?X=1", &|_| None, Some(true)).as_deref(),
            Some("sip:+4930123@h;user=phone;lr?X=1")
        );
        assert_eq!(
            rewrite_uri("sip:+4930123@h?X=1", &|_| None, Some(true)).as_deref(),
            Some("sip:+4930123@h;user=phone?X=1")
        );
        assert_eq!(
            rewrite_uri("sip:+4930123@h;user=phone", &|_| None, Some(true)),
            None
        );
        assert_eq!(
            rewrite_uri("tel:030123;phone-context=x", &f, Some(true)).as_deref(),
            Some("tel:+4930123;phone-context=x")
        );
        assert_eq!(
            rewrite_uri("sip:030123;isub=5@h", &f, None).as_deref(),
            Some("sip:+4930123;isub=5@h")
        );
    }

    #[test]
    fn name_addr_rewrites() {
        let f = |n: &str| to_e164(&de(), n);
        assert_eq!(
            rewrite_name_addr("\"A, B\" <sip:089@h>;tag=1", &f, None).as_deref(),
            Some("\"A, B\" <sip:+4989@h>;tag=1")
        );
        assert_eq!(
            rewrite_name_addr("sip:089@h;tag=1", &f, Some(true)).as_deref(),
            Some("<sip:+4989@h;user=phone>;tag=1")
        );
    }
}
