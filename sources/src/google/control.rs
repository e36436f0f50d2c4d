//! The admin listener's handle on the running lifecycle loop (`herald google status | renew
//! | stop`): commands sent to the loop, each answered on its own channel.

use tokio::sync::{mpsc, oneshot};

use super::status::Status;

pub(super) enum Command {
    Status(oneshot::Sender<Vec<Status>>),
    Renew(Option<String>, oneshot::Sender<Result<Vec<String>, String>>),
    Stop(String, oneshot::Sender<Result<String, String>>),
}

/// The admin listener's handle on the running lifecycle.
#[derive(Clone)]
pub struct Control {
    pub(super) commands: mpsc::Sender<Command>,
}

impl Control {
    pub async fn status(&self) -> Result<Vec<Status>, String> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Status(reply)).await?;
        answer.await.map_err(|_| gone())
    }

    /// Renews `name` (or everything) now; the names renewed, or the first error.
    pub async fn renew(&self, name: Option<String>) -> Result<Vec<String>, String> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Renew(name, reply)).await?;
        answer.await.map_err(|_| gone())?
    }

    /// Stops the channel `name` (`channels.stop`) and forgets it.
    pub async fn stop(&self, name: String) -> Result<String, String> {
        let (reply, answer) = oneshot::channel();
        self.send(Command::Stop(name, reply)).await?;
        answer.await.map_err(|_| gone())?
    }

    async fn send(&self, command: Command) -> Result<(), String> {
        self.commands.send(command).await.map_err(|_| gone())
    }
}

fn gone() -> String {
    "the Google lifecycle task has stopped".to_owned()
}
