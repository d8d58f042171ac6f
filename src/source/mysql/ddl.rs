//! The statements of a MySQL/MariaDB binlog that change which rows a table holds, or
//! what they hold, without row events: TRUNCATE, DROP TABLE / DATABASE, RENAME TABLE (also
//! `ALTER TABLE … RENAME`), and `ALTER TABLE … ADD COLUMN`, whose default every existing
//! row reads.
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
    /// Columns of the table were added (every row it held reads each one's default) or
    /// renamed (`from`, `to`, in the statement's order: the rows keep their values).
    AlterColumns {
        table: TableId,
        added: Vec<AddedColumn>,
        renamed: Vec<(String, String)>,
    },
}

/// A column an `ALTER TABLE … ADD` added, and what rows older than it read for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AddedColumn {
    pub name: String,
    pub default: ColumnDefault,
}

/// What an added column reads in the rows the table held.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ColumnDefault {
    /// `DEFAULT <literal>`: the literal's text (a string unquoted, a number as written,
    /// `TRUE`/`FALSE` as 1/0), which the server converts to the column's type.
    Literal(String),
    /// NULL: `DEFAULT NULL`, or no default on a nullable column.
    Null,
    /// No default on a NOT NULL column: the type's implicit default (0, '', …); the
    /// type's first word, lower-case, says which.
    Implicit(String),
    /// A value this statement does not say: an expression or function default
    /// (`CURRENT_TIMESTAMP`, `UUID()`, `(expr)`), AUTO_INCREMENT, a generated column.
    Unknown(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Token {
    /// A plain word (keyword or name).
    Word(String),
    /// A quoted name.
    Quoted(String),
    /// A string literal, unescaped.
    Str(String),
    Dot,
    Comma,
    Open,
    Close,
    Minus,
    /// Anything else: operators, other literals.
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
                let mut escaped = false;
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
                        // A string literal's escape: skip the escaped character. What it
                        // means depends on the session's sql_mode (NO_BACKSLASH_ESCAPES),
                        // so such a literal is not read as a value.
                        escaped = true;
                        i += 1;
                    }
                    text.push(ch);
                    i += 1;
                }
                out.push(if quote != '\'' {
                    Token::Quoted(text)
                } else if escaped {
                    Token::Other
                } else {
                    Token::Str(text)
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
            '(' => {
                out.push(Token::Open);
                i += 1;
            }
            '-' => {
                out.push(Token::Minus);
                i += 1;
            }
            ')' => {
                out.push(Token::Close);
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

    /// `[IF EXISTS] old TO new` after `RENAME COLUMN`.
    fn column_rename(&mut self) -> Option<(String, String)> {
        self.if_exists();
        let old = self.peek()?.name()?.to_owned();
        self.at += 1;
        if !self.keyword("to") {
            return None;
        }
        let new = self.peek()?.name()?.to_owned();
        Some((old, new))
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
        if self.keyword("wait") && self.at < self.tokens.len() {
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
        p.wait();
        let (mut added, mut renamed) = (Vec::new(), Vec::new());
        for clause in split(tokens.get(p.at..).unwrap_or_default()) {
            let mut c = Parser {
                tokens: clause,
                at: 0,
                default_schema,
            };
            // `RENAME [TO|AS] name` (not RENAME COLUMN, INDEX or KEY, which rename parts
            // of the table; RENAME is reserved, so a plain word is the keyword).
            if c.keyword("rename") {
                if c.keyword("column") {
                    // `RENAME COLUMN old TO new`: a column that cannot be read is left out.
                    renamed.extend(c.column_rename());
                    continue;
                }
                let part = c
                    .peek()
                    .is_some_and(|t| t.is("index") || t.is("key") || t.is("constraint"));
                if part {
                    continue;
                }
                if !(c.keyword("to") || c.keyword("as")) {
                    c.keyword("table");
                }
                return Some(Ddl::Rename(vec![(from, c.table()?)]));
            }
            if c.keyword("add") {
                // A column that cannot be read is left out: its value is then unknown.
                added.extend(added_columns(&clause[c.at..]).unwrap_or_default());
            }
            // `CHANGE [COLUMN] [IF EXISTS] old new definition`.
            if c.keyword("change") {
                c.keyword("column");
                c.if_exists();
                let names = (c.peek().and_then(Token::name), c.tokens.get(c.at + 1));
                if let (Some(old), Some(new)) = (names.0, names.1.and_then(Token::name))
                    && old != new
                {
                    renamed.push((old.to_owned(), new.to_owned()));
                }
            }
        }
        return (!added.is_empty() || !renamed.is_empty()).then_some(Ddl::AlterColumns {
            table: from,
            added,
            renamed,
        });
    }
    None
}

/// `tokens` split at the commas outside parentheses.
fn split(tokens: &[Token]) -> Vec<&[Token]> {
    let mut parts = Vec::new();
    let (mut depth, mut start) = (0usize, 0);
    for (i, token) in tokens.iter().enumerate() {
        match token {
            Token::Open => depth += 1,
            Token::Close => depth = depth.saturating_sub(1),
            Token::Comma if depth == 0 => {
                parts.push(&tokens[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    parts.push(&tokens[start..]);
    parts
}

/// What follows `ADD`: `[COLUMN] [IF NOT EXISTS] definition` or `(definition, …)`; no
/// column for `ADD INDEX`, a key, a constraint, a partition.
fn added_columns(tokens: &[Token]) -> Option<Vec<AddedColumn>> {
    let mut at = usize::from(tokens.first().is_some_and(|t| t.is("column")));
    const NOT_COLUMNS: [&str; 13] = [
        "index",
        "key",
        "constraint",
        "primary",
        "unique",
        "fulltext",
        "spatial",
        "foreign",
        "partition",
        "check",
        "period",
        "system",
        "vector",
    ];
    if tokens
        .get(at)
        .is_some_and(|t| NOT_COLUMNS.iter().any(|k| t.is(k)))
    {
        return Some(Vec::new());
    }
    if tokens.get(at).is_some_and(|t| t.is("if")) {
        let not_exists = tokens.get(at + 1).is_some_and(|t| t.is("not"))
            && tokens.get(at + 2).is_some_and(|t| t.is("exists"));
        if !not_exists {
            return None;
        }
        at += 3;
    }
    match tokens.get(at)? {
        Token::Open => {
            let inner = tokens.get(at + 1..tokens.len().checked_sub(1)?)?;
            if tokens.last() != Some(&Token::Close) {
                return None;
            }
            split(inner).into_iter().map(column_definition).collect()
        }
        _ => Some(vec![column_definition(&tokens[at..])?]),
    }
}

/// `name type[(…)] attributes…`: the column and what the rows the table held read for it.
fn column_definition(tokens: &[Token]) -> Option<AddedColumn> {
    let name = tokens.first()?.name()?.to_owned();
    let Token::Word(type_word) = tokens.get(1)? else {
        return None;
    };
    let type_word = type_word.to_ascii_lowercase();
    let unknown = |why: &str| ColumnDefault::Unknown(why.to_owned());
    let (mut not_null, mut null, mut default) = (false, false, None);
    let mut why =
        (type_word == "serial").then_some("it is SERIAL (AUTO_INCREMENT), so rows are numbered");
    let mut i = 2;
    while let Some(token) = tokens.get(i) {
        i += 1;
        if token.is("not") && tokens.get(i).is_some_and(|t| t.is("null")) {
            not_null = true;
            i += 1;
        } else if token.is("null") {
            null = true;
        } else if token.is("default") {
            let (value, used) = default_value(tokens.get(i..).unwrap_or_default());
            default = Some(value);
            i += used;
        } else if token.is("auto_increment") {
            why = Some("it is AUTO_INCREMENT, so rows are numbered");
        } else if token.is("generated") || token.is("as") {
            why = Some("it is a generated column");
        }
    }
    let default = match default {
        _ if why.is_some() => unknown(why.unwrap_or_default()),
        Some(value) => value,
        // Without explicit_defaults_for_timestamp (MariaDB before 10.10, MySQL 5.7), such a
        // column defaults to CURRENT_TIMESTAMP.
        None if type_word == "timestamp" && !null => unknown(
            "it is a TIMESTAMP without NULL or DEFAULT, which may default to CURRENT_TIMESTAMP (explicit_defaults_for_timestamp)",
        ),
        None if not_null => ColumnDefault::Implicit(type_word),
        None => ColumnDefault::Null,
    };
    Some(AddedColumn { name, default })
}

/// The default after `DEFAULT`, and how many tokens it took.
fn default_value(tokens: &[Token]) -> (ColumnDefault, usize) {
    // A plain decimal number (`12`, `9.99`), whose text the server keeps as written when
    // it converts it; hexadecimal, exponents and leading zeros are not read.
    let digits = |w: &str| !w.is_empty() && w.chars().all(|c| c.is_ascii_digit());
    let number = |tokens: &[Token]| -> Option<(String, usize)> {
        let Some(Token::Word(whole)) = tokens.first() else {
            return None;
        };
        if !digits(whole) || (whole.len() > 1 && whole.starts_with('0')) {
            return None;
        }
        match (tokens.get(1), tokens.get(2)) {
            (Some(Token::Dot), Some(Token::Word(fraction))) if digits(fraction) => {
                Some((format!("{whole}.{fraction}"), 3))
            }
            (Some(Token::Dot), _) => None,
            _ => Some((whole.clone(), 1)),
        }
    };
    match tokens.first() {
        Some(Token::Str(text)) => (ColumnDefault::Literal(text.clone()), 1),
        Some(Token::Minus) => match number(&tokens[1..]) {
            Some((n, used)) => (ColumnDefault::Literal(format!("-{n}")), used + 1),
            None => (expression(), 1),
        },
        Some(t) if t.is("null") => (ColumnDefault::Null, 1),
        Some(t) if t.is("true") => (ColumnDefault::Literal("1".into()), 1),
        Some(t) if t.is("false") => (ColumnDefault::Literal("0".into()), 1),
        _ => match number(tokens) {
            Some((n, used)) => (ColumnDefault::Literal(n), used),
            None => (expression(), 1),
        },
    }
}

fn expression() -> ColumnDefault {
    ColumnDefault::Unknown(
        "its default is an expression or a function (CURRENT_TIMESTAMP, UUID(), …), evaluated when the column was added".into(),
    )
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
        assert_eq!(parse("x", "ALTER TABLE t DROP INDEX i"), None);
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
        let columns = |renamed: &[(&str, &str)]| Ddl::AlterColumns {
            table: id("s", "t"),
            added: Vec::new(),
            renamed: renamed
                .iter()
                .map(|(a, b)| ((*a).to_owned(), (*b).to_owned()))
                .collect(),
        };
        assert_eq!(
            parse("s", "ALTER TABLE t RENAME COLUMN a TO b"),
            Some(columns(&[("a", "b")])),
            "a column rename keeps the table"
        );
        assert_eq!(
            parse(
                "s",
                "ALTER TABLE t CHANGE COLUMN `a` `b c` BIGINT, CHANGE d d INT, \
                 RENAME COLUMN IF EXISTS e TO f, CHANGE IF EXISTS g h TEXT, RENAME INDEX i TO j"
            ),
            Some(columns(&[("a", "b c"), ("e", "f"), ("g", "h")])),
            "a CHANGE that keeps the name renames nothing"
        );
        assert_eq!(
            parse("s", "ALTER TABLE t CHANGE a A INT"),
            Some(columns(&[("a", "A")])),
            "a CHANGE of the name's case renames it"
        );
        assert_eq!(
            parse("s", "/*!40000 ALTER TABLE `t` RENAME AS `u` */"),
            Some(Ddl::Rename(vec![(id("s", "t"), id("s", "u"))]))
        );
    }

    #[test]
    fn add_column_says_what_older_rows_read() {
        let col = |name: &str, default| AddedColumn {
            name: name.into(),
            default,
        };
        let lit = |t: &str| ColumnDefault::Literal(t.into());
        let parsed = parse(
            "shop",
            "ALTER TABLE `it ems` ADD COLUMN active TINYINT(1) NOT NULL DEFAULT TRUE, \
             ADD price DECIMAL(10,2) DEFAULT 9.99 COMMENT 'in euro', ADD note varchar(20), \
             ADD COLUMN IF NOT EXISTS n INT NOT NULL, ADD (a INT DEFAULT -1, b CHAR(2) DEFAULT 'it''s'), \
             ADD INDEX (price), ADD c INT DEFAULT NULL, ADD d DATETIME DEFAULT CURRENT_TIMESTAMP, \
             ADD e INT AUTO_INCREMENT, ADD f INT AS (a + 1) VIRTUAL, DROP COLUMN g, \
             ADD h ENUM('x','y') NOT NULL, ADD i varchar(9) DEFAULT 'a\\'b'",
        );
        assert_eq!(
            parsed,
            Some(Ddl::AlterColumns {
                table: TableId::new("shop", "it ems"),
                added: vec![
                    col("active", lit("1")),
                    col("price", lit("9.99")),
                    col("note", ColumnDefault::Null),
                    col("n", ColumnDefault::Implicit("int".into())),
                    col("a", lit("-1")),
                    col("b", lit("it's")),
                    col("c", ColumnDefault::Null),
                    col("d", expression()),
                    col(
                        "e",
                        ColumnDefault::Unknown("it is AUTO_INCREMENT, so rows are numbered".into())
                    ),
                    col(
                        "f",
                        ColumnDefault::Unknown("it is a generated column".into())
                    ),
                    col("h", ColumnDefault::Implicit("enum".into())),
                    // A backslash escape depends on the session's sql_mode.
                    col("i", expression()),
                ],
                renamed: Vec::new(),
            })
        );
        let defaults = |sql: &str| match parse("shop", sql) {
            Some(Ddl::AlterColumns { added, .. }) => added.into_iter().map(|c| c.default).collect(),
            other => panic!("{sql}: {other:?}"),
        };
        let found: Vec<ColumnDefault> = defaults(
            "ALTER TABLE t ADD s SERIAL, ADD ts TIMESTAMP, ADD tn TIMESTAMP NULL, \
             ADD x INT DEFAULT 0x41, ADD y INT DEFAULT 01, ADD z DECIMAL(4,1) DEFAULT 1. NOT NULL",
        );
        assert!(matches!(&found[0], ColumnDefault::Unknown(w) if w.contains("SERIAL")));
        assert!(matches!(&found[1], ColumnDefault::Unknown(w) if w.contains("TIMESTAMP")));
        assert_eq!(found[2], ColumnDefault::Null);
        assert!(
            found[3..]
                .iter()
                .all(|d| matches!(d, ColumnDefault::Unknown(_)))
        );
        assert_eq!(parse("shop", "ALTER TABLE t WAIT"), None);
        assert_eq!(parse("shop", "ALTER TABLE t ADD INDEX i (a)"), None);
        assert_eq!(
            parse("shop", "ALTER TABLE t ADD COLUMN x INT, RENAME TO u"),
            Some(Ddl::Rename(vec![(
                TableId::new("shop", "t"),
                TableId::new("shop", "u")
            )]))
        );
    }
}
