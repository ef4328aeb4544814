//! Helpers shared by the Redis tests: the servers of a test's own come from
//! `tokenkeeper_testing::redis_servers`.
#![allow(unused_imports, unreachable_pub)]

pub use tokenkeeper_testing::redis_servers::{
    cli, free_port, wait_until, OwnCluster, OwnRedis, OwnSentinel,
};
