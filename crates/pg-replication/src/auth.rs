//! The authentication exchange that follows the startup message.

use fallible_iterator::FallibleIterator;
use postgres_protocol::authentication::md5_hash;
use postgres_protocol::authentication::sasl::{ChannelBinding, SCRAM_SHA_256, ScramSha256};
use postgres_protocol::message::backend::Message;
use postgres_protocol::message::frontend;
use tokio::io::{AsyncRead, AsyncWrite};

use crate::connection::ConnectParams;
use crate::error::ReplicationError;
use crate::framing::{Backend, Framed};

/// Runs the server-chosen authentication method until AuthenticationOk.
pub(crate) async fn authenticate<S>(
    framed: &mut Framed<S>,
    params: &ConnectParams,
) -> Result<(), ReplicationError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match next_auth_message(framed).await? {
        Message::AuthenticationOk => Ok(()),
        Message::AuthenticationCleartextPassword => {
            let password = password(params)?;
            frontend::password_message(password, framed.out())?;
            framed.flush().await?;
            expect_ok(framed).await
        }
        Message::AuthenticationMd5Password(body) => {
            let password = password(params)?;
            let hashed = md5_hash(params.user.as_bytes(), password, body.salt());
            frontend::password_message(hashed.as_bytes(), framed.out())?;
            framed.flush().await?;
            expect_ok(framed).await
        }
        Message::AuthenticationSasl(body) => {
            let mut mechanisms = Vec::new();
            let mut iter = body.mechanisms();
            while let Some(m) = iter
                .next()
                .map_err(|e| ReplicationError::protocol(format!("malformed SASL offer: {e}")))?
            {
                mechanisms.push(m.to_owned());
            }
            if !mechanisms.iter().any(|m| m == SCRAM_SHA_256) {
                return Err(ReplicationError::UnsupportedAuthentication(format!(
                    "SASL ({})",
                    mechanisms.join(", ")
                )));
            }
            let password = password(params)?;
            scram(framed, password).await?;
            expect_ok(framed).await
        }
        Message::AuthenticationKerberosV5 => unsupported("Kerberos V5"),
        Message::AuthenticationScmCredential => unsupported("SCM credential"),
        Message::AuthenticationGss | Message::AuthenticationGssContinue(_) => unsupported("GSSAPI"),
        Message::AuthenticationSspi => unsupported("SSPI"),
        _ => Err(ReplicationError::protocol(
            "unexpected message during authentication",
        )),
    }
}

/// SCRAM-SHA-256 without channel binding: the stream may not be TLS, and we cannot see it if it is.
async fn scram<S>(framed: &mut Framed<S>, password: &[u8]) -> Result<(), ReplicationError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    let mut scram = ScramSha256::new(password, ChannelBinding::unsupported());
    frontend::sasl_initial_response(SCRAM_SHA_256, scram.message(), framed.out())?;
    framed.flush().await?;

    let server_first = match next_auth_message(framed).await? {
        Message::AuthenticationSaslContinue(body) => body,
        _ => {
            return Err(ReplicationError::protocol(
                "expected AuthenticationSASLContinue",
            ));
        }
    };
    scram
        .update(server_first.data())
        .map_err(|e| ReplicationError::Authentication(format!("SCRAM: {e}")))?;
    frontend::sasl_response(scram.message(), framed.out())?;
    framed.flush().await?;

    let server_final = match next_auth_message(framed).await? {
        Message::AuthenticationSaslFinal(body) => body,
        _ => {
            return Err(ReplicationError::protocol(
                "expected AuthenticationSASLFinal",
            ));
        }
    };
    // Verifying the server signature proves the server knows the password too.
    scram
        .finish(server_final.data())
        .map_err(|e| ReplicationError::Authentication(format!("SCRAM: {e}")))
}

async fn expect_ok<S>(framed: &mut Framed<S>) -> Result<(), ReplicationError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    match next_auth_message(framed).await? {
        Message::AuthenticationOk => Ok(()),
        _ => Err(ReplicationError::protocol("expected AuthenticationOk")),
    }
}

/// Next message, with ErrorResponse (e.g. a wrong password) turned into `Db` and notices skipped.
async fn next_auth_message<S>(framed: &mut Framed<S>) -> Result<Message, ReplicationError>
where
    S: AsyncRead + AsyncWrite + Unpin,
{
    loop {
        match framed.next().await? {
            Backend::Message(Message::ErrorResponse(body)) => {
                return Err(ReplicationError::from_fields(body.fields()));
            }
            Backend::Message(Message::NoticeResponse(_)) => continue,
            Backend::Message(msg) => return Ok(msg),
            Backend::CopyBothResponse => {
                return Err(ReplicationError::protocol(
                    "unexpected CopyBothResponse during authentication",
                ));
            }
        }
    }
}

fn password(params: &ConnectParams) -> Result<&[u8], ReplicationError> {
    params
        .password
        .as_deref()
        .map(str::as_bytes)
        .ok_or(ReplicationError::PasswordRequired)
}

fn unsupported(method: &str) -> Result<(), ReplicationError> {
    Err(ReplicationError::UnsupportedAuthentication(
        method.to_owned(),
    ))
}

#[cfg(test)]
mod tests {
    use tokio::io::{AsyncWriteExt, duplex};

    use crate::connection::{ConnectParams, ReplicationConnection};
    use crate::error::ReplicationError;

    fn params(password: Option<&str>) -> ConnectParams {
        ConnectParams {
            user: "rep".into(),
            password: password.map(str::to_owned),
            database: "db".into(),
            application_name: "test".into(),
        }
    }

    /// Plays a server that answers the startup message with one authentication request.
    async fn connect_with_request(request: &[u8], password: Option<&str>) -> ReplicationError {
        let (client, mut server) = duplex(1 << 16);
        let mut frame = vec![b'R'];
        frame.extend_from_slice(&u32::try_from(request.len() + 4).unwrap().to_be_bytes());
        frame.extend_from_slice(request);
        server.write_all(&frame).await.unwrap();
        match ReplicationConnection::connect(client, &params(password)).await {
            Ok(_) => panic!("connect unexpectedly succeeded"),
            Err(e) => e,
        }
    }

    #[tokio::test]
    async fn gssapi_is_reported_by_name() {
        let err = connect_with_request(&7u32.to_be_bytes(), Some("pw")).await;
        assert!(
            matches!(&err, ReplicationError::UnsupportedAuthentication(m) if m == "GSSAPI"),
            "{err}"
        );
        assert!(err.to_string().contains("GSSAPI"));
    }

    #[tokio::test]
    async fn channel_binding_only_sasl_is_unsupported() {
        let mut body = 10u32.to_be_bytes().to_vec();
        body.extend_from_slice(b"SCRAM-SHA-256-PLUS\0\0");
        let err = connect_with_request(&body, Some("pw")).await;
        assert!(
            matches!(&err, ReplicationError::UnsupportedAuthentication(m) if m.contains("SCRAM-SHA-256-PLUS")),
            "{err}"
        );
    }

    #[tokio::test]
    async fn cleartext_without_password_needs_configuration() {
        let err = connect_with_request(&3u32.to_be_bytes(), None).await;
        assert!(matches!(err, ReplicationError::PasswordRequired), "{err}");
    }

    #[tokio::test]
    async fn md5_without_password_needs_configuration() {
        let mut body = 5u32.to_be_bytes().to_vec();
        body.extend_from_slice(&[1, 2, 3, 4]);
        let err = connect_with_request(&body, None).await;
        assert!(matches!(err, ReplicationError::PasswordRequired), "{err}");
    }
}
