package robot

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/quic-go/quic-go"
)

func TestRefusal(t *testing.T) {
	for _, tc := range []struct {
		name string
		err  error
		want string // "" means not a refusal
	}{
		{"revoked", &quic.TransportError{Remote: true, ErrorCode: 0x12c}, "certificate: revoked"},
		{"expired", &quic.TransportError{Remote: true, ErrorCode: 0x12d}, "certificate: expired"},
		{"unknown CA", fmt.Errorf("no welcome: %w", &quic.TransportError{Remote: true, ErrorCode: 0x130}), "not signed by its CA"},
		{"bad certificate", &quic.TransportError{Remote: true, ErrorCode: 0x12a}, "not accepted"},
		{"server's certificate of another CA", fmt.Errorf("dial: %w", &tls.CertificateVerificationError{Err: x509.UnknownAuthorityError{}}), "not from this robot's CA"},
		{"refused message", fmt.Errorf("connection lost: %w", &refusedMessage{"this robot was deleted"}), "this robot was deleted"},
		{"a local TLS alert", &quic.TransportError{Remote: false, ErrorCode: 0x12a}, ""},
		{"another remote TLS alert", &quic.TransportError{Remote: true, ErrorCode: 0x150}, ""},
		{"a protocol error", &quic.TransportError{Remote: true, ErrorCode: quic.ProtocolViolation}, ""},
		{"the control plane cannot serve now", &quic.ApplicationError{Remote: true, ErrorCode: 1, ErrorMessage: "the control plane cannot serve now"}, ""},
		{"idle timeout", &quic.IdleTimeoutError{}, ""},
		{"handshake timeout", &quic.HandshakeTimeoutError{}, ""},
		{"stateless reset", &quic.StatelessResetError{}, ""},
		{"other", errors.New("no welcome: EOF"), ""},
		{"nil", nil, ""},
	} {
		reason, ok := refusal(tc.err)
		if ok != (tc.want != "") || !strings.Contains(reason, tc.want) {
			t.Errorf("%s: refusal(%v) = %q, %v; want %q", tc.name, tc.err, reason, ok, tc.want)
		}
	}
}
