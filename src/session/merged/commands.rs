//! Commands that name a mailbox, and commands on the selected one.

use super::*;

impl Shared {
    pub(in crate::session) fn by_name(
        &mut self,
        m: &mut Merged,
        op: NameOp,
        mut cmd: Command<'_>,
        raw: &Bytes,
        tag: Bytes,
    ) {
        use CommandBody as C;
        if let C::Rename { from, to } = &cmd.body {
            let (a, b) = (m.client_name(from), m.client_name(to));
            match (m.map.to_backend(&a), m.map.to_backend(&b)) {
                (Ok(Target::New(na)), Ok(Target::New(nb))) => {
                    let unchanged = na == a && nb == b && !m.utf8();
                    let body = C::Rename {
                        from: mailbox(na),
                        to: mailbox(nb),
                    };
                    self.send_or_refuse(
                        m,
                        Store::New,
                        raw,
                        tag,
                        (!unchanged).then_some(body),
                        After::Nothing,
                    );
                }
                (Err(MapError::BadEncoding), _) | (_, Err(MapError::BadEncoding)) => {
                    self.send_client(bad_name(&tag))
                }
                _ => self.send_client(read_only(&tag)),
            }
            return;
        }
        let Some(name) = mailbox_mut(&mut cmd.body).map(|mb| m.client_name(mb)) else {
            return;
        };
        let subscription = matches!(op, NameOp::Subscribe | NameOp::Unsubscribe);
        if matches!(op, NameOp::Select | NameOp::Examine | NameOp::Status)
            && m.map.is_reserved(&name)
            && self
                .cfg
                .served
                .serves(&String::from_utf8_lossy(&m.credentials.user), &name)
        {
            // Served from its NEW copy, which has the client's own name:
            // read-only as on OLD, and OLD is not needed.
            let body = match cmd.body {
                C::Status { item_names, .. } => C::Status {
                    mailbox: mailbox(name),
                    item_names,
                },
                C::Select { parameters, .. } | C::Examine { parameters, .. } => C::Examine {
                    mailbox: mailbox(name),
                    parameters,
                },
                _ => return,
            };
            let after = if op == NameOp::Status {
                After::Nothing
            } else {
                m.copy_opening = true;
                After::Select(Store::New)
            };
            return self.forward(
                m,
                Store::New,
                tag.clone(),
                reply::command(&tag, body),
                after,
            );
        }
        let target = match m.map.to_backend(&name) {
            // OLD's layout is known once it is logged in: until then a
            // nested `Old/a/b` cannot be mapped (or hidden) as LIST would.
            Err(MapError::Unrepresentable)
                if m.old != OldState::Ready && m.map.is_reserved(&name) =>
            {
                if subscription {
                    // Kept by Ferry: OLD need not be asked.
                    Target::OldRoot
                } else if matches!(op, NameOp::Select | NameOp::Examine | NameOp::Status) {
                    match self.need_old(m, raw) {
                        None => return,
                        Some(_) => return self.send_client(unavailable(&tag)),
                    }
                } else {
                    return self.send_client(read_only(&tag));
                }
            }
            Ok(t) => t,
            Err(MapError::BadEncoding) => return self.send_client(bad_name(&tag)),
            Err(MapError::Unrepresentable) => {
                return self.send_client(reply::no(&tag, Rfc5530::NonExistent, "No such mailbox"));
            }
        };
        match (op, target) {
            (NameOp::Subscribe | NameOp::Unsubscribe, Target::Old(_) | Target::OldRoot) => {
                // Kept by Ferry: never on OLD, and NEW refuses names it lacks.
                let on = op == NameOp::Subscribe;
                let reply = match self.cfg.subscriptions.set(&m.credentials.user, &name, on) {
                    Ok(()) => reply::ok(
                        &tag,
                        if on {
                            "SUBSCRIBE completed"
                        } else {
                            "UNSUBSCRIBE completed"
                        },
                    ),
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot store an Old/ subscription");
                        reply::no(&tag, Rfc5530::ServerBug, "Subscription could not be saved")
                    }
                };
                self.send_client(reply);
            }
            (_, Target::OldRoot)
                if matches!(op, NameOp::Select | NameOp::Examine | NameOp::Status) =>
            {
                self.send_client(reply::no(
                    &tag,
                    Rfc5530::NonExistent,
                    "Old is a folder of folders only",
                ))
            }
            (
                NameOp::Create | NameOp::Delete | NameOp::Append,
                Target::Old(_) | Target::OldRoot,
            ) => self.send_client(read_only(&tag)),
            (_, Target::OldRoot) => self.send_client(read_only(&tag)),
            (op, Target::New(n)) => {
                let unchanged = n == name && !m.utf8();
                let mut body = cmd.body;
                set_mailbox(&mut body, mailbox(n));
                let after = match op {
                    NameOp::Select | NameOp::Examine => After::Select(Store::New),
                    _ => After::Nothing,
                };
                self.send_or_refuse(m, Store::New, raw, tag, (!unchanged).then_some(body), after);
            }
            (op, Target::Old(n)) => {
                let Some(ready) = self.need_old(m, raw) else {
                    return;
                };
                if !ready {
                    return self.send_client(unavailable(&tag));
                }
                let modseq = self.old_modseq(m);
                let body = match (op, cmd.body) {
                    // Old/ folders are always opened read-only.
                    (
                        NameOp::Select | NameOp::Examine,
                        C::Select { parameters, .. } | C::Examine { parameters, .. },
                    ) => {
                        m.old_name = Some(n.clone());
                        m.old_view = OldView::default();
                        // Without mod-sequences the parameters cannot be
                        // honoured: the folder says NOMODSEQ instead.
                        m.nomodseq =
                            !modseq && (!parameters.is_empty() || m.enabled.has(Cap::Condstore));
                        C::Examine {
                            mailbox: mailbox(n),
                            parameters: if modseq { parameters } else { Vec::new() },
                        }
                    }
                    (NameOp::Status, C::Status { mut item_names, .. }) => {
                        use imap_codec::imap_types::status::StatusDataItemName as Item;
                        if !modseq
                            && m.caps.has(Cap::Condstore)
                            && item_names.contains(&Item::HighestModSeq)
                        {
                            item_names.to_mut().retain(|i| *i != Item::HighestModSeq);
                            m.zero_modseq = true;
                        }
                        // OLD is only sent what it advertised: other items
                        // are left out, as LIST-STATUS leaves them out.
                        let caps = self.store_info(Store::Old).map(|i| i.capabilities.clone());
                        item_names
                            .to_mut()
                            .retain(|i| caps.as_ref().is_some_and(|c| c.offers_status(i)));
                        if item_names.is_empty() && !m.zero_modseq {
                            return self.send_client(reply::no(
                                &tag,
                                Rfc5530::Cannot,
                                "The Old/ folder store does not offer these STATUS items",
                            ));
                        }
                        if item_names.is_empty() {
                            // Only HIGHESTMODSEQ was asked: 0, OLD need not be.
                            m.zero_modseq = false;
                            self.send_client(reply::zero_modseq_status(m.shown_name(name)));
                            return self.send_client(reply::ok(&tag, "STATUS completed"));
                        }
                        C::Status {
                            mailbox: mailbox(n),
                            item_names,
                        }
                    }
                    _ => return self.send_client(read_only(&tag)),
                };
                let after = if op == NameOp::Status {
                    After::Nothing
                } else {
                    After::Select(Store::Old)
                };
                self.forward(
                    m,
                    Store::Old,
                    tag.clone(),
                    reply::command(&tag, body),
                    after,
                );
            }
        }
    }

    /// Sends a command on the selected mailbox as the client sent it.
    pub(in crate::session) fn selected_as_is(
        &mut self,
        m: &mut Merged,
        op: SelectedOp,
        store: Store,
        raw: &Bytes,
        tag: Bytes,
    ) {
        let after = match op {
            SelectedOp::Close | SelectedOp::Unselect => After::Deselect,
            _ => After::Nothing,
        };
        self.send_or_refuse(m, store, raw, tag, None, after);
    }

    pub(in crate::session) fn on_selected(
        &mut self,
        m: &mut Merged,
        op: SelectedOp,
        mut cmd: Command<'_>,
        raw: &Bytes,
        tag: Bytes,
    ) {
        let Some(store) = m.selected else {
            return self.send_client(reply::bad(&tag, "No mailbox selected"));
        };
        if m.old_copy {
            // An `Old/` folder served from its NEW copy: read-only as on OLD.
            match op {
                SelectedOp::Store => return self.flag_echo(m, Store::New, cmd, tag),
                SelectedOp::Expunge => {
                    return self.send_client(reply::ok(
                        &tag,
                        "Nothing expunged: Old/ folders are read-only",
                    ));
                }
                SelectedOp::Move => {
                    return self.send_client(reply::no_code(
                        &tag,
                        Code::ReadOnly,
                        "Old/ folders are read-only: copy the messages instead",
                    ));
                }
                _ => {}
            }
        }
        match (op, store) {
            (SelectedOp::Read, Store::Old) if !route::old_may_receive(&cmd.body) => {
                self.send_client(read_only(&tag))
            }
            (SelectedOp::Read, Store::Old) if !m.old_copy => {
                self.old_read(m, raw, tag, Verb::of(raw))
            }
            (SelectedOp::Read, _)
            | (
                SelectedOp::Store | SelectedOp::Expunge | SelectedOp::Close | SelectedOp::Unselect,
                Store::New,
            ) => self.selected_as_is(m, op, store, raw, tag),
            (SelectedOp::Store, Store::Old) => self.flag_echo(m, Store::Old, cmd, tag),
            (SelectedOp::Expunge, Store::Old) => self.send_client(reply::ok(
                &tag,
                "Nothing expunged: Old/ folders are read-only",
            )),
            (SelectedOp::Close | SelectedOp::Unselect, Store::Old) => {
                let body = self.unselect_body(Store::Old);
                self.forward(
                    m,
                    Store::Old,
                    tag.clone(),
                    reply::command(&tag, body),
                    After::Deselect,
                );
            }
            (SelectedOp::Copy | SelectedOp::Move, _) => {
                let Some(name) = mailbox_mut(&mut cmd.body).map(|mb| m.client_name(mb)) else {
                    return;
                };
                let n = match new_destination(&m.map, &name, &tag) {
                    Ok(n) => n,
                    Err(refusal) => return self.send_client(refusal),
                };
                match store {
                    Store::Old if op == SelectedOp::Move => self.send_client(reply::no_code(
                        &tag,
                        Code::ReadOnly,
                        "Old/ folders are read-only: copy the messages instead",
                    )),
                    Store::Old => self.start_copy(m, tag, cmd.body, n),
                    Store::New => {
                        let unchanged = n == name && !m.utf8();
                        let mut body = cmd.body;
                        set_mailbox(&mut body, mailbox(n));
                        self.send_or_refuse(
                            m,
                            store,
                            raw,
                            tag,
                            (!unchanged).then_some(body),
                            After::Nothing,
                        );
                    }
                }
            }
        }
    }

    /// RFC 4314 style: flags the user may not change in an `Old/` folder are
    /// ignored, and the real flags are reported (fetchmail --keep stops on
    /// a NO here).
    ///
    /// With CONDSTORE the echo carries each message's MODSEQ too, so an
    /// `UNCHANGEDSINCE` STORE sees that nothing changed; in a folder without
    /// mod-sequences that STORE is refused as RFC 7162 §3.1.2.2 says.
    fn flag_echo(&mut self, m: &mut Merged, store: Store, cmd: Command<'_>, tag: Bytes) {
        let CommandBody::Store {
            sequence_set,
            uid,
            modifiers,
            ..
        } = cmd.body
        else {
            return;
        };
        let modseq = match store {
            Store::Old => self.old_modseq(m),
            Store::New => self.store_has(Store::New, Cap::Condstore),
        };
        if !modifiers.is_empty() && !modseq {
            return self.send_client(reply::bad(
                &tag,
                "Old/ folders have no mod-sequences here (NOMODSEQ)",
            ));
        }
        let mut items = vec![MessageDataItemName::Flags];
        if modseq && (m.enabled.has(Cap::Condstore) || !modifiers.is_empty()) {
            items.push(MessageDataItemName::ModSeq);
        }
        let ferry_tag = self.ferry_tag();
        let body = CommandBody::Fetch {
            sequence_set,
            macro_or_item_names: MacroOrMessageDataItemNames::MessageDataItemNames(items),
            uid,
            modifiers: Vec::new(),
        };
        let bytes = reply::command(&ferry_tag, body);
        let job = Job::FlagEcho {
            store,
            tag,
            ferry_tag,
        };
        self.start(m, None, store, bytes, job);
    }
}
