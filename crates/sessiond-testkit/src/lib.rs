//! Test support for sessiond: the store conformance suite every engine must pass.
//!
//! The service decides session semantics once, above the [`SessionStore`] line, so it is only
//! correct if every engine keeps the same contract. This crate states that contract as tests.
//! An engine runs the suite from one of its integration tests, with a factory that opens a
//! fresh store:
//!
//! ```ignore
//! async fn store() -> Arc<dyn SessionStore> { /* open an empty store */ }
//!
//! sessiond_testkit::store_conformance_tests!(store);
//! ```
//!
//! The calling crate needs `tokio` (with `macros` and `rt-multi-thread`) among its
//! dev-dependencies, because the generated tests are `#[tokio::test]`s.
//!
//! # Layout
//!
//! - [`conformance`]: the cases, one `pub async fn` each taking the store under test, and the
//!   helpers that build records at fixed times.
//! - [`store_conformance_tests!`]: expands to one `#[tokio::test]` per case, named after it.
//! - [`redis`]: real `redis-server` processes (standalone and Cluster) for tests.
//! - [`outbox`]: the outbox conformance cases, for engines that keep an outbox for the
//!   durable tier, and [`outbox_conformance_tests!`].
//! - [`postgres`]: a real PostgreSQL server (`initdb` in a temporary directory) for tests.
//! - [`proxy`]: a pausable TCP proxy, to make a replica lag while it keeps answering.
//! - [`guarded`]: a store that keeps what it runs on (a server, a directory) alive with it.
//! - [`clock`]: a clock tests advance, so expiry is tested without sleeping.
//! - [`certs`]: certificates for the TLS tests.
//!
//! [`SessionStore`]: sessiond_core::SessionStore

pub mod certs;
pub mod clock;
pub mod conformance;
pub mod guarded;
pub mod outbox;
pub mod postgres;
pub mod proxy;
pub mod redis;

/// Expands to one `#[tokio::test(flavor = "multi_thread", worker_threads = 2)]` per
/// conformance case, each named after its case in [`conformance`].
///
/// The argument is a factory: anything callable with no arguments that returns a future of
/// an `Arc` of the store (an `async fn` or a closure returning an `async` block). It runs
/// inside each test's runtime, once per test, and must return a store holding nothing
/// (counts are compared as differences, so a shared backend with a fresh namespace per call
/// also works). The multi-threaded runtime is what lets the racing cases actually race.
#[macro_export]
macro_rules! store_conformance_tests {
    ($factory:expr $(,)?) => {
        // Keep in step with the `pub async fn`s in `conformance.rs`; a unit test checks it.
        $crate::__conformance_cases! { $factory;
            create_then_load_returns_equal_record,
            load_of_unknown_id_is_none,
            create_with_taken_id_changes_nothing,
            touch_moves_activity_forward_and_keeps_data,
            touch_never_moves_activity_backward,
            touch_extends_idle_expiry,
            touch_of_unknown_or_expired_session_writes_nothing,
            idle_expiry_is_exact_to_the_millisecond,
            idle_expired_session_is_gone_for_every_operation,
            absolute_expiry_is_not_extended_by_touches,
            update_data_with_current_version_replaces_data,
            update_data_with_stale_version_is_refused,
            update_data_of_unknown_session_is_not_found,
            concurrent_updates_lose_nothing,
            rotate_with_expected_hash_replaces_it,
            rotate_with_old_hash_is_stale,
            rotate_of_unknown_session_is_not_found,
            racing_rotations_have_exactly_one_winner,
            delete_removes_session_and_index_entry,
            delete_of_expired_session_reports_false,
            list_user_returns_exactly_the_users_live_sessions,
            list_of_unknown_user_is_empty,
            delete_user_removes_every_live_session,
            delete_user_keeps_the_excepted_session,
            delete_all_ends_every_session_of_every_user,
            load_identity_is_load_but_user_data_may_be_left_out,
            a_wrapper_keeps_the_identity_only_read,
            d09_user_ids_of_any_printable_character_stay_apart,
            reclaim_expired_removes_only_expired_sessions,
            cap_evicts_the_least_recently_active_session,
            cap_with_reject_writes_nothing,
            cap_ignores_expired_sessions,
            create_with_replaces_ends_the_replaced_session_in_the_same_operation,
            create_with_replaces_ends_only_a_live_session_of_the_same_user,
            a_refused_create_ends_no_replaced_session,
            count_tracks_creates_and_deletes,
            ping_succeeds,
        }
    };
}

/// The expansion behind [`store_conformance_tests!`]; not for direct use.
#[doc(hidden)]
#[macro_export]
macro_rules! __conformance_cases {
    ($factory:expr; $($case:ident),+ $(,)?) => {
        $(
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $case() {
                let store = ($factory)().await;
                $crate::conformance::$case(store).await;
            }
        )+
    };
}

/// Expands to one test per case of [`outbox`], like [`store_conformance_tests!`]. The factory
/// takes the outbox's capacity in entries and returns a fresh store keeping an outbox that
/// large.
#[macro_export]
macro_rules! outbox_conformance_tests {
    ($factory:expr $(,)?) => {
        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn every_change_is_one_outbox_entry_in_order() {
            let store = ($factory)(1_000_000).await;
            $crate::outbox::every_change_is_one_outbox_entry_in_order(store).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn shipped_entries_leave_and_the_rest_stay() {
            let store = ($factory)(1_000_000).await;
            $crate::outbox::shipped_entries_leave_and_the_rest_stay(store).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_full_outbox_refuses_creates_and_patches_but_never_a_revocation() {
            let store = ($factory)(3).await;
            $crate::outbox::a_full_outbox_refuses_creates_and_patches_but_never_a_revocation(store)
                .await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn restore_writes_back_unless_a_revocation_left_a_tombstone() {
            let store = ($factory)(1_000_000).await;
            $crate::outbox::restore_writes_back_unless_a_revocation_left_a_tombstone(store).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn demote_removes_only_the_state_the_tier_holds() {
            let store = ($factory)(1_000_000).await;
            $crate::outbox::demote_removes_only_the_state_the_tier_holds(store).await;
        }

        #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn cold_sessions_are_still_their_users() {
            let store = ($factory)(1_000_000).await;
            $crate::outbox::cold_sessions_are_still_their_users(store).await;
        }
    };
}

#[cfg(test)]
mod tests {
    /// A case missing from the macro would compile and silently never run, so check that
    /// the macro lists exactly the suite's cases.
    #[test]
    fn macro_lists_every_case() {
        let suite = include_str!("conformance.rs");
        let mut cases: Vec<&str> = suite
            .lines()
            .filter_map(|line| line.strip_prefix("pub async fn "))
            .filter_map(|rest| rest.split_once('(').map(|(name, _)| name))
            .collect();
        cases.sort_unstable();

        let this = include_str!("lib.rs");
        let start = this.find("__conformance_cases! { $factory;").unwrap();
        let body = &this[start..];
        let body = &body[body.find('\n').unwrap()..body.find('}').unwrap()];
        let mut listed: Vec<&str> = body
            .split(',')
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .collect();
        listed.sort_unstable();

        assert!(!cases.is_empty(), "found no cases in conformance.rs");
        assert_eq!(
            listed, cases,
            "store_conformance_tests! must list every case"
        );
    }
}
