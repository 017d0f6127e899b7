//! Variable substitution in one Dockerfile word, the way Docker 20.10's legacy builder
//! does it (`shell.Lex.ProcessWord` of the buildkit v0.8 frontend it vendors):
//! `$VAR`, `${VAR}`, `${VAR:-word}`, `${VAR:+word}`, `${VAR:?msg}`, `${VAR?msg}`,
//! single and double quotes (removed), and the escape token (`\` or the backtick the
//! `escape` directive chose). An unset variable is the empty string, as in Docker.
//!
//! A lookup can also be *unknown*: a name the Dockerfile does not define may come from
//! the base image's `ENV`, which the static check does not always see. A word that
//! used an unknown value is returned as [`Expanded::Unknown`], never guessed.
//!
//! Where Docker's rules depend on Unicode tables (letters and digits in a variable
//! name) and the character is not ASCII, the word is refused rather than guessed.
#![forbid(unsafe_code)]

/// What a variable lookup found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lookup {
    Set(String),
    Unset,
    /// Not decidable statically; the string says why (for the message).
    Unknown(String),
}

/// The result of substituting one word.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Expanded {
    Known(String),
    /// The value depends on something the check cannot see; the string names it.
    Unknown(String),
}

impl Expanded {
    pub fn known(&self) -> Option<&str> {
        match self {
            Expanded::Known(s) => Some(s),
            Expanded::Unknown(_) => None,
        }
    }
}

/// Substitutes the variables of `word`. Errors are Docker's own (`bad substitution`,
/// `X: is not allowed to be unset`, an unterminated quote), plus a refusal of
/// non-ASCII characters where Docker would consult Unicode tables.
pub fn process_word(
    word: &str,
    escape: char,
    env: &dyn Fn(&str) -> Lookup,
) -> Result<Expanded, String> {
    let mut sw = ShellWord {
        chars: word.chars().collect(),
        pos: 0,
        escape,
        env,
        unknown: None,
    };
    let out = sw
        .process_stop_on(None)
        .map_err(|e| format!("failed to process {word:?}: {e}"))?;
    Ok(match sw.unknown {
        Some(why) => Expanded::Unknown(why),
        None => Expanded::Known(out),
    })
}

struct ShellWord<'a> {
    chars: Vec<char>,
    pos: usize,
    escape: char,
    env: &'a dyn Fn(&str) -> Lookup,
    unknown: Option<String>,
}

impl ShellWord<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn next(&mut self) -> Option<char> {
        let c = self.peek();
        if c.is_some() {
            self.pos += 1;
        }
        c
    }

    /// Go's `getEnv`: the value and whether it was found; an unknown value is
    /// remembered and counts as found-and-empty for the rest of the word.
    fn get_env(&mut self, name: &str) -> (String, bool, bool) {
        match (self.env)(name) {
            Lookup::Set(v) => (v, true, false),
            Lookup::Unset => (String::new(), false, false),
            Lookup::Unknown(why) => {
                self.unknown.get_or_insert(why);
                (String::new(), true, true)
            }
        }
    }

    fn process_stop_on(&mut self, stop: Option<char>) -> Result<String, String> {
        let mut result = String::new();
        while let Some(ch) = self.peek() {
            if stop == Some(ch) {
                self.next();
                return Ok(result);
            }
            match ch {
                '\'' => result.push_str(&self.process_single_quote()?),
                '"' => result.push_str(&self.process_double_quote()?),
                '$' => result.push_str(&self.process_dollar()?),
                _ => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.escape {
                        match self.next() {
                            None => break,
                            Some(c) => ch = c,
                        }
                    }
                    result.push(ch);
                }
            }
        }
        if let Some(s) = stop {
            return Err(format!(
                "unexpected end of statement while looking for matching {s}"
            ));
        }
        Ok(result)
    }

    fn process_single_quote(&mut self) -> Result<String, String> {
        self.next();
        let mut result = String::new();
        loop {
            match self.next() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching single-quote"
                            .into(),
                    )
                }
                Some('\'') => return Ok(result),
                Some(c) => result.push(c),
            }
        }
    }

    fn process_double_quote(&mut self) -> Result<String, String> {
        self.next();
        let mut result = String::new();
        loop {
            match self.peek() {
                None => {
                    return Err(
                        "unexpected end of statement while looking for matching double-quote"
                            .into(),
                    )
                }
                Some('"') => {
                    self.next();
                    return Ok(result);
                }
                Some('$') => result.push_str(&self.process_dollar()?),
                Some(_) => {
                    let mut ch = self.next().unwrap_or_default();
                    if ch == self.escape {
                        match self.peek() {
                            None => continue,
                            Some(c) if c == '"' || c == '$' || c == self.escape => {
                                ch = self.next().unwrap_or_default();
                            }
                            Some(_) => {}
                        }
                    }
                    result.push(ch);
                }
            }
        }
    }

    fn process_dollar(&mut self) -> Result<String, String> {
        self.next();
        if self.peek() != Some('{') {
            let name = self.process_name()?;
            if name.is_empty() {
                return Ok("$".into());
            }
            return Ok(self.get_env(&name).0);
        }
        self.next();
        match self.peek() {
            None => return Err("syntax error: missing '}'".into()),
            Some('{' | '}' | ':') => return Err("syntax error: bad substitution".into()),
            Some(_) => {}
        }
        let name = self.process_name()?;
        match self.next() {
            Some('}') => Ok(self.get_env(&name).0),
            Some('?') => {
                let word = self.word_until_brace()?;
                let (value, found, unknown) = self.get_env(&name);
                if !found && !unknown {
                    let msg = if word.is_empty() {
                        "is not allowed to be unset".to_string()
                    } else {
                        word
                    };
                    return Err(format!("{name}: {msg}"));
                }
                Ok(value)
            }
            Some(':') => {
                let modifier = self.next();
                let word = self.word_until_brace()?;
                let (value, found, unknown) = self.get_env(&name);
                match modifier {
                    Some('+') => Ok(if value.is_empty() { value } else { word }),
                    Some('-') => Ok(if value.is_empty() { word } else { value }),
                    Some('?') => {
                        if unknown {
                            return Ok(value);
                        }
                        let msg = |default: &str| {
                            if word.is_empty() {
                                default.to_string()
                            } else {
                                word.clone()
                            }
                        };
                        if !found {
                            return Err(format!("{name}: {}", msg("is not allowed to be unset")));
                        }
                        if value.is_empty() {
                            return Err(format!("{name}: {}", msg("is not allowed to be empty")));
                        }
                        Ok(value)
                    }
                    Some(m) => Err(format!("unsupported modifier ({m}) in substitution")),
                    None => Err("unsupported modifier in substitution".into()),
                }
            }
            _ => Err("missing ':' in substitution".into()),
        }
    }

    /// The word of `${X:-word}` up to the closing brace (itself substituted).
    fn word_until_brace(&mut self) -> Result<String, String> {
        self.process_stop_on(Some('}')).map_err(|e| {
            if self.peek().is_none() {
                "syntax error: missing '}'".to_string()
            } else {
                e
            }
        })
    }

    /// A name: ASCII letters, digits and `_`; a leading digit takes all the digits
    /// that follow; a special parameter (`$@`, `$#`, ...) is one character.
    fn process_name(&mut self) -> Result<String, String> {
        let mut name = String::new();
        while let Some(ch) = self.peek() {
            if !ch.is_ascii() {
                return Err(format!(
                    "the non-ASCII character {ch:?} after '$' is not supported in a variable \
                     name (write the name in ASCII letters, digits and '_')"
                ));
            }
            if name.is_empty() && ch.is_ascii_digit() {
                while let Some(d) = self.peek().filter(char::is_ascii_digit) {
                    self.next();
                    name.push(d);
                }
                return Ok(name);
            }
            if name.is_empty() && matches!(ch, '@' | '*' | '#' | '?' | '-' | '$' | '!') {
                self.next();
                name.push(ch);
                return Ok(name);
            }
            if !ch.is_ascii_alphanumeric() && ch != '_' {
                break;
            }
            self.next();
            name.push(ch);
        }
        Ok(name)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Lookup + 'a {
        move |n: &str| {
            if n == "UNKNOWN" {
                return Lookup::Unknown("UNKNOWN may come from the base image".into());
            }
            pairs
                .iter()
                .find(|(k, _)| *k == n)
                .map(|(_, v)| Lookup::Set(v.to_string()))
                .unwrap_or(Lookup::Unset)
        }
    }

    fn w(word: &str, pairs: &[(&str, &str)]) -> Result<Expanded, String> {
        process_word(word, '\\', &env(pairs))
    }

    fn k(word: &str, pairs: &[(&str, &str)]) -> String {
        match w(word, pairs) {
            Ok(Expanded::Known(s)) => s,
            other => panic!("{word:?}: {other:?}"),
        }
    }

    #[test]
    fn plain_and_braced_variables() {
        let e = [("U", "root"), ("E", "")];
        assert_eq!(k("$U", &e), "root");
        assert_eq!(k("${U}", &e), "root");
        assert_eq!(k("x${U}y", &e), "xrooty");
        assert_eq!(k("$NOPE", &e), "");
        assert_eq!(k("a$", &e), "a$");
        assert_eq!(k("$1x", &e), "x");
        assert_eq!(k("$U:$U", &e), "root:root");
    }

    #[test]
    fn modifiers_follow_the_reference() {
        let e = [("U", "root"), ("E", "")];
        assert_eq!(k("${NOPE:-root}", &e), "root");
        assert_eq!(k("${E:-root}", &e), "root");
        assert_eq!(k("${U:-nobody}", &e), "root");
        assert_eq!(k("${U:+x}", &e), "x");
        assert_eq!(k("${E:+x}", &e), "");
        assert_eq!(k("${NOPE:+x}", &e), "");
        assert_eq!(k("${NOPE:-${U}}", &e), "root");
        assert_eq!(k("${U?}", &e), "root");
        assert!(w("${NOPE?}", &e)
            .unwrap_err()
            .contains("NOPE: is not allowed to be unset"));
        assert!(w("${E:?boom}", &e).unwrap_err().contains("E: boom"));
        assert!(w("${U-x}", &e).unwrap_err().contains("missing ':'"));
        assert!(w("${U:=x}", &e)
            .unwrap_err()
            .contains("unsupported modifier"));
        assert!(w("${}", &e).unwrap_err().contains("bad substitution"));
        assert!(w("${U", &e).unwrap_err().contains("missing"));
        assert!(w("${U:-x", &e).unwrap_err().contains("missing '}'"));
    }

    #[test]
    fn quotes_and_escapes() {
        let e = [("U", "root")];
        assert_eq!(k("'$U'", &e), "$U");
        assert_eq!(k("\"$U\"", &e), "root");
        assert_eq!(k("\\$U", &e), "$U");
        assert_eq!(k("\"\\$U\"", &e), "$U");
        assert_eq!(k("\"a\\b\"", &e), "a\\b");
        assert_eq!(k("a\\", &e), "a");
        assert_eq!(k("r\\o\\ot", &e), "root");
        assert!(w("'open", &e).is_err());
        assert!(w("\"open", &e).is_err());
        // with the backtick escape, a backslash is an ordinary character
        assert_eq!(
            process_word("`$U\\", '`', &env(&e)).unwrap(),
            Expanded::Known("$U\\".into())
        );
    }

    #[test]
    fn unknown_values_are_never_guessed() {
        let e = [("U", "root")];
        assert!(matches!(w("$UNKNOWN", &e), Ok(Expanded::Unknown(_))));
        assert!(matches!(
            w("${UNKNOWN:-root}", &e),
            Ok(Expanded::Unknown(_))
        ));
        assert!(matches!(w("${UNKNOWN:?}", &e), Ok(Expanded::Unknown(_))));
        assert!(matches!(w("${UNKNOWN?}", &e), Ok(Expanded::Unknown(_))));
        assert_eq!(k("'$UNKNOWN'", &e), "$UNKNOWN");
    }

    #[test]
    fn non_ascii_names_are_refused() {
        assert!(w("$é", &[]).is_err());
        assert!(w("${Ué}", &[]).is_err());
        assert_eq!(k("é$", &[]), "é$");
    }
}
