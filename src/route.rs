//! The route table of the merged phase: one row per command, exhaustive, so adding
//! a command is adding a row. The session turns a route into backend traffic.

use imap_codec::imap_types::{command::CommandBody, core::Tag};

use crate::verb::Verb;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// Answered by Ferry alone.
    Local(Local),
    /// Goes to the store that holds the mailbox the command names.
    ByName(NameOp),
    /// Goes to the store holding the selected mailbox.
    Selected(SelectedOp),
    /// LIST or LSUB over both stores.
    List { lsub: bool },
    /// IDLE on the selected store (NEW when nothing is selected).
    Idle,
    /// NOOP: to the selected store, to NEW otherwise (keeps it alive).
    Noop,
    /// ENABLE: remembered by Ferry, passed on to each store as it is used.
    Enable,
    /// Refused with BAD: wrong state or an extension Ferry does not advertise.
    Bad(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Local {
    Capability,
    Id,
    Namespace,
    Logout,
    /// COMPRESS=DEFLATE toward the client: Ferry's own (stores never compress
    /// toward Ferry).
    Compress,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameOp {
    Select,
    Examine,
    Create,
    Delete,
    Rename,
    Subscribe,
    Unsubscribe,
    Status,
    Append,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SelectedOp {
    /// FETCH, SEARCH, SORT, THREAD, CHECK: read-only, forwarded as they are.
    Read,
    Store,
    Expunge,
    Close,
    Unselect,
    Copy,
    Move,
}

/// Routes an authenticated command in the merged phase.
pub fn route(body: &CommandBody<'_>) -> Route {
    use CommandBody as C;
    match body {
        C::Capability => Route::Local(Local::Capability),
        C::Id { .. } => Route::Local(Local::Id),
        C::Namespace => Route::Local(Local::Namespace),
        C::Logout => Route::Local(Local::Logout),
        C::Noop => Route::Noop,
        C::Idle => Route::Idle,
        C::Select { .. } => Route::ByName(NameOp::Select),
        C::Examine { .. } => Route::ByName(NameOp::Examine),
        C::Create { .. } => Route::ByName(NameOp::Create),
        C::Delete { .. } => Route::ByName(NameOp::Delete),
        C::Rename { .. } => Route::ByName(NameOp::Rename),
        C::Subscribe { .. } => Route::ByName(NameOp::Subscribe),
        C::Unsubscribe { .. } => Route::ByName(NameOp::Unsubscribe),
        C::Status { .. } => Route::ByName(NameOp::Status),
        C::Append { .. } => Route::ByName(NameOp::Append),
        C::List { .. } => Route::List { lsub: false },
        C::Lsub { .. } => Route::List { lsub: true },
        C::Fetch { .. } | C::Search { .. } | C::Sort { .. } | C::Thread { .. } | C::Check => {
            Route::Selected(SelectedOp::Read)
        }
        C::Store { .. } => Route::Selected(SelectedOp::Store),
        C::Expunge | C::ExpungeUid { .. } => Route::Selected(SelectedOp::Expunge),
        C::Close => Route::Selected(SelectedOp::Close),
        C::Unselect => Route::Selected(SelectedOp::Unselect),
        C::Copy { .. } => Route::Selected(SelectedOp::Copy),
        C::Move { .. } => Route::Selected(SelectedOp::Move),
        C::Login { .. } | C::Authenticate { .. } => Route::Bad("Already authenticated"),
        C::StartTLS => Route::Bad("STARTTLS is only valid before login"),
        C::Enable { .. } => Route::Enable,
        C::Compress { .. } => Route::Local(Local::Compress),
        C::GetQuota { .. } | C::GetQuotaRoot { .. } | C::SetQuota { .. } => {
            Route::Bad("QUOTA is not supported")
        }
        #[allow(unreachable_patterns)]
        _ => Route::Bad("Command not supported"),
    }
}

/// The route of the command on `line` told by its name alone, for the few
/// commands the merged phase may forward without decoding them: NOOP and
/// FETCH, SEARCH, SORT, THREAD, STORE (also under UID), whose routes never
/// depend on their arguments. `None`: decode the command. The tag must be valid, since the
/// session matches the store's answer by it. `verb` is `line`'s.
pub fn by_name(line: &[u8], verb: Verb) -> Option<Route> {
    let (tag, name) = crate::frame::head(line);
    if name.is_empty() || Tag::validate(tag).is_err() {
        return None;
    }
    match verb.name() {
        // CANCELUPDATE (RFC 5267) ends a search context of the selected
        // mailbox's store.
        "FETCH" | "SEARCH" | "SORT" | "THREAD" | "CANCELUPDATE" => {
            Some(Route::Selected(SelectedOp::Read))
        }
        "STORE" => Some(Route::Selected(SelectedOp::Store)),
        "NOOP" if !verb.is_uid() => Some(Route::Noop),
        _ => None,
    }
}

/// Commands that may ever reach the OLD store in the merged phase, as the client
/// sent them. Everything else Ferry sends to OLD it builds itself (EXAMINE,
/// STATUS, LIST, FETCH FLAGS, UNSELECT/CLOSE of a read-only mailbox, LOGOUT).
pub fn old_may_receive(body: &CommandBody<'_>) -> bool {
    use CommandBody as C;
    matches!(
        body,
        C::Fetch { .. }
            | C::Search { .. }
            | C::Sort { .. }
            | C::Thread { .. }
            | C::Check
            | C::Noop
            | C::Idle
    )
}

#[cfg(test)]
mod tests {
    use imap_codec::{CommandCodec, decode::Decoder};

    use super::*;

    fn route_of(line: &str) -> Route {
        let (_, cmd) = CommandCodec::new()
            .decode(line.as_bytes())
            .unwrap_or_else(|e| panic!("{line}: {e:?}"));
        route(&cmd.body)
    }

    #[test]
    fn table() {
        assert_eq!(route_of("a LIST \"\" *\r\n"), Route::List { lsub: false });
        assert_eq!(
            route_of("a UID STORE 1 +FLAGS (\\Seen)\r\n"),
            Route::Selected(SelectedOp::Store)
        );
        assert_eq!(
            route_of("a UID EXPUNGE 1\r\n"),
            Route::Selected(SelectedOp::Expunge)
        );
        assert_eq!(
            route_of("a SELECT Old/INBOX\r\n"),
            Route::ByName(NameOp::Select)
        );
        assert_eq!(route_of("a ENABLE CONDSTORE\r\n"), Route::Enable);
        assert_eq!(route_of("a NAMESPACE\r\n"), Route::Local(Local::Namespace));
        assert_eq!(
            route_of("a COMPRESS DEFLATE\r\n"),
            Route::Local(Local::Compress)
        );
    }

    #[test]
    fn a_route_by_name_is_the_decoded_route() {
        for line in [
            "a NOOP\r\n",
            "a1 noop\r\n",
            "a FETCH 1:* (FLAGS)\r\n",
            "x.2 UID FETCH 1 (BODY.PEEK[])\r\n",
            "a uid fetch 1:* (UID FLAGS)\r\n",
            "a SEARCH UNSEEN\r\n",
            "a UID SORT (DATE) UTF-8 ALL\r\n",
            "a THREAD REFERENCES UTF-8 ALL\r\n",
            "a UID SEARCH CHARSET UTF-8 TEXT {3+}\r\nabc\r\n",
            "a STORE 1 +FLAGS (\\Seen)\r\n",
            "t]1 UID STORE 1:3 -FLAGS.SILENT (\\Deleted)\r\n",
        ] {
            assert_eq!(
                by_name(line.as_bytes(), Verb::of(line.as_bytes())),
                Some(route_of(line)),
                "{line}"
            );
        }
    }

    #[test]
    fn cancelupdate_goes_to_the_selected_store_by_name() {
        let line = b"a CANCELUPDATE \"t1\"\r\n";
        assert_eq!(
            by_name(line, Verb::of(line)),
            Some(Route::Selected(SelectedOp::Read))
        );
    }

    #[test]
    fn other_commands_and_bad_tags_are_decoded() {
        for line in [
            "a SELECT INBOX\r\n",
            "a UID NOOP\r\n",
            "a UID COPY 1 x\r\n",
            "a COPY 1 x\r\n",
            "a EXPUNGE\r\n",
            "a IDLE\r\n",
            "a FETCHX 1 FLAGS\r\n",
            "a\r\n",
            "a  FETCH 1 FLAGS\r\n",
            // The store's untagged answers would look tagged by these.
            "* FETCH 1 FLAGS\r\n",
            "+ NOOP\r\n",
            "a+ NOOP\r\n",
            "{1} NOOP\r\n",
            "a\"b NOOP\r\n",
        ] {
            assert_eq!(
                by_name(line.as_bytes(), Verb::of(line.as_bytes())),
                None,
                "{line}"
            );
        }
    }

    #[test]
    fn old_never_receives_writes() {
        let codec = CommandCodec::new();
        for line in [
            "a STORE 1 +FLAGS (\\Deleted)\r\n",
            "a EXPUNGE\r\n",
            "a UID EXPUNGE 1\r\n",
            "a APPEND x {1+}\r\nx\r\n",
            "a CREATE x\r\n",
            "a DELETE x\r\n",
            "a RENAME x y\r\n",
            "a COPY 1 x\r\n",
            "a MOVE 1 x\r\n",
            "a SUBSCRIBE x\r\n",
            "a CLOSE\r\n",
            "a SELECT x\r\n",
        ] {
            let (_, cmd) = codec.decode(line.as_bytes()).unwrap();
            assert!(!old_may_receive(&cmd.body), "{line}");
        }
    }
}
