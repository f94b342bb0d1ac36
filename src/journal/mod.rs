//! The durable message store.
