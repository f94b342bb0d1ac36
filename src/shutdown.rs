//! One stop signal for every task.
//!
//! [`Shutdown`] is a cheap clone of a `watch` receiver: a task awaits [`Shutdown::recv`] in its `select!` and
//! stops taking new work when it fires. [`Trigger`] fires it once, for every clone at the same time.

use tokio::sync::watch;

/// Fires the stop signal.
#[derive(Debug)]
pub struct Trigger(watch::Sender<bool>);

/// Listens for the stop signal.
#[derive(Debug, Clone)]
pub struct Shutdown(watch::Receiver<bool>);

/// A linked trigger and listener.
pub fn channel() -> (Trigger, Shutdown) {
    let (tx, rx) = watch::channel(false);
    (Trigger(tx), Shutdown(rx))
}

impl Trigger {
    /// Tells every listener to stop.
    pub fn fire(&self) {
        let _ = self.0.send(true);
    }

    /// A new listener on this trigger.
    pub fn subscribe(&self) -> Shutdown {
        Shutdown(self.0.subscribe())
    }
}

impl Shutdown {
    /// Whether the signal has fired.
    pub fn is_fired(&self) -> bool {
        *self.0.borrow()
    }

    /// Resolves once the signal fires (at once if it already has, or if the trigger is gone).
    pub async fn recv(&mut self) {
        let _ = self.0.wait_for(|fired| *fired).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn every_listener_sees_the_signal() {
        let (trigger, mut a) = channel();
        let mut b = a.clone();
        assert!(!a.is_fired());
        trigger.fire();
        a.recv().await;
        b.recv().await;
        assert!(b.is_fired());
    }
}
