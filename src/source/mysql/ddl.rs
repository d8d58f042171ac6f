//! The statements of a MySQL/MariaDB binlog that change which rows a table holds without
//! row events: TRUNCATE, DROP TABLE / DATABASE and RENAME TABLE (also `ALTER TABLE …
//! RENAME`).
//!
//! Names are read the way the server reads them: backquoted (a doubled backquote is one),
//! double-quoted (ANSI_QUOTES), or plain; a name may be qualified by its schema, and a
//! quoted part may hold spaces and dots. Comments (`/* */`, `-- `, `#`) are skipped; the
//! code inside an executable comment (`/*!50001 … */`, `/*M!100000 … */`) is read. A
//! statement that is not one of these, or that cannot be read whole, is `None`: the caller
//! then leaves the lake as it is, never applies a guess.

use crate::ident::TableId;

/// What a statement did to tables.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ddl {
    /// The table is empty from here on.
    Truncate(TableId),
    /// The tables are gone (a table of the same name may be created again).
    Drop(Vec<TableId>),
    /// Every table of the schema is gone.
    DropSchema(String),
    /// Each table now has the second name; the first holds nothing.
    Rename(Vec<(TableId, TableId)>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A plain word (keyword or name).
    Word(String),
    /// A quoted name.
    Quoted(String),
    Dot,
    Comma,
    /// Anything else: parentheses, operators, literals.
    Other,
}

impl Token {
    fn is(&self, keyword: &str) -> bool {
        matches!(self, Token::Word(w) if w.eq_ignore_ascii_case(keyword))
    }

    fn name(&self) -> Option<&str> {
        match self {
            Token::Word(w) | Token::Quoted(w) => Some(w),
            _ => None,
        }
    }
}

/// Splits a statement into tokens; `None` when a quote or comment is not closed.
fn tokens(sql: &str) -> Option<Vec<Token>> {
    let chars: Vec<char> = sql.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    let mut in_code_comment = 0usize;
    while i < chars.len() {
        let c = chars[i];
        let next = chars.get(i + 1).copied();
        match c {
            c if c.is_whitespace() || c == ';' => i += 1,
            '/' if next == Some('*') => {
                let code = chars.get(i + 2) == Some(&'!')
                    || (chars.get(i + 2) == Some(&'M') && chars.get(i + 3) == Some(&'!'));
                if code {
                    // Executable comment: its body is code; skip the version number.
                    i += if chars[i + 2] == 'M' { 4 } else { 3 };
                    while i < chars.len() && chars[i].is_ascii_digit() {
                        i += 1;
                    }
                    in_code_comment += 1;
                } else {
                    let end = (i + 2..chars.len().saturating_sub(1))
                        .find(|&j| chars[j] == '*' && chars[j + 1] == '/')?;
                    i = end + 2;
                }
            }
            '*' if next == Some('/') && in_code_comment > 0 => {
                in_code_comment -= 1;
                i += 2;
            }
            '#' => {
                i = (i..chars.len())
                    .find(|&j| chars[j] == '\n')
                    .unwrap_or(chars.len());
            }
            '-' if next == Some('-') && chars.get(i + 2).is_none_or(|c| c.is_whitespace()) => {
                i = (i..chars.len())
                    .find(|&j| chars[j] == '\n')
                    .unwrap_or(chars.len());
            }
            '`' | '"' | '\'' => {
                let quote = c;
                let mut text = String::new();
                i += 1;
                loop {
                    let ch = *chars.get(i)?;
                    if ch == quote {
                        if chars.get(i + 1) == Some(&quote) {
                            text.push(quote);
                            i += 2;
                            continue;
                        }
                        i += 1;
                        break;
                    }
                    if ch == '\\' && quote == '\'' {
                        // A string literal's escape: skip the escaped character.
                        i += 1;
                    }
                    text.push(ch);
                    i += 1;
                }
                out.push(if quote == '\'' {
                    Token::Other
                } else {
                    Token::Quoted(text)
                });
            }
            '.' => {
                out.push(Token::Dot);
                i += 1;
            }
            ',' => {
                out.push(Token::Comma);
                i += 1;
            }
            c if c.is_alphanumeric() || c == '_' || c == '$' || !c.is_ascii() => {
                let start = i;
                while i < chars.len()
                    && (chars[i].is_alphanumeric()
                        || chars[i] == '_'
                        || chars[i] == '$'
                        || !chars[i].is_ascii())
                    && !chars[i].is_whitespace()
                {
                    i += 1;
                }
                out.push(Token::Word(chars[start..i].iter().collect()));
            }
            _ => {
                out.push(Token::Other);
                i += 1;
            }
        }
    }
    Some(out)
}

/// A cursor over a statement's tokens.
struct Parser<'a> {
    tokens: &'a [Token],
    at: usize,
    default_schema: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn keyword(&mut self, keyword: &str) -> bool {
        let hit = self.peek().is_some_and(|t| t.is(keyword));
        if hit {
            self.at += 1;
        }
        hit
    }

    /// `IF EXISTS`, if it comes next.
    fn if_exists(&mut self) {
        if self.peek().is_some_and(|t| t.is("if"))
            && self.tokens.get(self.at + 1).is_some_and(|t| t.is("exists"))
        {
            self.at += 2;
        }
    }

    /// `[schema.]table`.
    fn table(&mut self) -> Option<TableId> {
        let first = self.peek()?.name()?.to_owned();
        self.at += 1;
        if self.peek() == Some(&Token::Dot) {
            self.at += 1;
            let second = self.peek()?.name()?.to_owned();
            self.at += 1;
            return Some(TableId::new(first, second));
        }
        Some(TableId::new(self.default_schema, first))
    }

    /// `name [, name]…`.
    fn tables(&mut self) -> Option<Vec<TableId>> {
        let mut out = vec![self.table()?];
        while self.peek() == Some(&Token::Comma) {
            self.at += 1;
            out.push(self.table()?);
        }
        Some(out)
    }

    /// `WAIT n` or `NOWAIT` (MariaDB), if it comes next.
    fn wait(&mut self) {
        if self.keyword("nowait") {
            return;
        }
        if self.keyword("wait") {
            self.at += 1;
        }
    }
}

/// The statement `sql`, run with `default_schema` as the current database, if it is one
/// that changes rows without row events.
pub fn parse(default_schema: &str, sql: &str) -> Option<Ddl> {
    let tokens = tokens(sql)?;
    let mut p = Parser {
        tokens: &tokens,
        at: 0,
        default_schema,
    };
    if p.keyword("truncate") {
        p.keyword("table");
        return Some(Ddl::Truncate(p.table()?));
    }
    if p.keyword("drop") {
        if p.keyword("temporary") {
            // A temporary table is the session's own; the base table is untouched.
            return None;
        }
        if p.keyword("database") || p.keyword("schema") {
            p.if_exists();
            return Some(Ddl::DropSchema(p.peek()?.name()?.to_owned()));
        }
        if !(p.keyword("table") || p.keyword("tables")) {
            return None;
        }
        p.if_exists();
        return Some(Ddl::Drop(p.tables()?));
    }
    if p.keyword("rename") {
        if !(p.keyword("table") || p.keyword("tables")) {
            return None;
        }
        p.if_exists();
        let mut pairs = Vec::new();
        loop {
            let from = p.table()?;
            p.wait();
            if !p.keyword("to") {
                return None;
            }
            pairs.push((from, p.table()?));
            if p.peek() != Some(&Token::Comma) {
                return Some(Ddl::Rename(pairs));
            }
            p.at += 1;
        }
    }
    if p.keyword("alter") {
        p.keyword("online");
        p.keyword("ignore");
        if !p.keyword("table") {
            return None;
        }
        p.if_exists();
        let from = p.table()?;
        // `RENAME [TO|AS] name` among the clauses (not RENAME COLUMN, INDEX or KEY, which
        // rename parts of the table; RENAME is reserved, so a plain word is the keyword).
        while let Some(token) = p.peek().cloned() {
            p.at += 1;
            if !token.is("rename") {
                continue;
            }
            let part = p.peek().is_some_and(|t| {
                t.is("column") || t.is("index") || t.is("key") || t.is("constraint")
            });
            if part {
                continue;
            }
            if !(p.keyword("to") || p.keyword("as")) {
                p.keyword("table");
            }
            return Some(Ddl::Rename(vec![(from, p.table()?)]));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(s: &str, t: &str) -> TableId {
        TableId::new(s, t)
    }

    #[test]
    fn truncate_names_its_whole_table() {
        assert_eq!(
            parse("shop", "TRUNCATE TABLE `orders`"),
            Some(Ddl::Truncate(id("shop", "orders")))
        );
        assert_eq!(
            parse("shop", "TRUNCATE TABLE `a b`"),
            Some(Ddl::Truncate(id("shop", "a b")))
        );
        assert_eq!(
            parse("x", "truncate `shop`.`a.b`;"),
            Some(Ddl::Truncate(id("shop", "a.b")))
        );
        assert_eq!(
            parse("x", "/* c */ TRUNCATE  `we``ird` "),
            Some(Ddl::Truncate(id("x", "we`ird")))
        );
        assert_eq!(
            parse("x", "truncate shop . orders"),
            Some(Ddl::Truncate(id("shop", "orders")))
        );
        assert_eq!(
            parse("x", "TRUNCATE \"ansi name\""),
            Some(Ddl::Truncate(id("x", "ansi name")))
        );
        assert_eq!(parse("x", "ALTER TABLE t ADD c INT"), None);
        assert_eq!(parse("x", "TRUNCATE TABLE `open"), None);
    }

    #[test]
    fn drop_names_every_table() {
        assert_eq!(
            parse(
                "s",
                "DROP TABLE IF EXISTS `a b`,`o`.`x.y`, plain /* generated by server */"
            ),
            Some(Ddl::Drop(vec![
                id("s", "a b"),
                id("o", "x.y"),
                id("s", "plain")
            ]))
        );
        assert_eq!(parse("s", "DROP TEMPORARY TABLE t"), None);
        assert_eq!(
            parse("s", "drop database if exists `my db`"),
            Some(Ddl::DropSchema("my db".into()))
        );
        assert_eq!(parse("s", "DROP INDEX i ON t"), None);
        assert_eq!(
            parse("s", "# note\nDROP TABLE t"),
            Some(Ddl::Drop(vec![id("s", "t")]))
        );
    }

    #[test]
    fn rename_pairs_old_and_new_names() {
        assert_eq!(
            parse("s", "RENAME TABLE `a b` TO `c.d`, o.x TO `p`.`y z`"),
            Some(Ddl::Rename(vec![
                (id("s", "a b"), id("s", "c.d")),
                (id("o", "x"), id("p", "y z"))
            ]))
        );
        assert_eq!(
            parse("s", "ALTER TABLE `t` ADD COLUMN c INT, RENAME TO `u v`"),
            Some(Ddl::Rename(vec![(id("s", "t"), id("s", "u v"))]))
        );
        assert_eq!(
            parse("s", "ALTER TABLE t RENAME COLUMN a TO b"),
            None,
            "a column rename keeps the table"
        );
        assert_eq!(
            parse("s", "/*!40000 ALTER TABLE `t` RENAME AS `u` */"),
            Some(Ddl::Rename(vec![(id("s", "t"), id("s", "u"))]))
        );
    }
}
