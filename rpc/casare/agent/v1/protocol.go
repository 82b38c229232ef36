package agentv1

import (
	"bufio"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"

	"google.golang.org/protobuf/encoding/protodelim"
	"google.golang.org/protobuf/proto"
)

// The hand-written part of the robot protocol: the token string and the
// framing that agent.proto describes. Both the control plane and the agent
// use it, so it lives with the messages.

const (
	// ALPN names of the two kinds of QUIC connection.
	ALPNEnroll = "casare-enroll/1"
	ALPN       = "casare/1"
	// MaxFrameSize bounds one message: a peer cannot make the other
	// allocate more.
	MaxFrameSize = 4 << 20
	// TokenPrefix starts every enrollment token string.
	TokenPrefix = "cet1_"
)

// EncodeToken returns the string form of an enrollment token.
func EncodeToken(t *EnrollmentToken) string {
	b, _ := proto.Marshal(t)
	return TokenPrefix + base64.RawURLEncoding.EncodeToString(b)
}

// ParseToken reads an enrollment token string and checks that it carries
// everything enrolment needs.
func ParseToken(s string) (*EnrollmentToken, error) {
	s = strings.TrimSpace(s)
	if !strings.HasPrefix(s, TokenPrefix) {
		return nil, fmt.Errorf("enrollment token: does not start with %q; copy it whole from casarectl robots token create", TokenPrefix)
	}
	raw, err := base64.RawURLEncoding.DecodeString(s[len(TokenPrefix):])
	if err != nil {
		return nil, fmt.Errorf("enrollment token: damaged (%v); copy it whole", err)
	}
	t := &EnrollmentToken{}
	if err := proto.Unmarshal(raw, t); err != nil {
		return nil, errors.New("enrollment token: damaged; copy it whole")
	}
	switch {
	case t.GetServer() == "":
		return nil, errors.New("enrollment token: no server address in it")
	case len(t.GetCaFingerprint()) != 32:
		return nil, errors.New("enrollment token: no CA fingerprint in it")
	case len(t.GetSecret()) < 16:
		return nil, errors.New("enrollment token: no secret in it")
	}
	return t, nil
}

// FrameReader reads length-prefixed messages from a stream.
type FrameReader struct {
	r *bufio.Reader
}

// frameBuffer is small because most frames are: a control stream per idle
// robot should cost little, and larger frames read through it directly.
const frameBuffer = 512

// NewFrameReader returns a reader of frames from r.
func NewFrameReader(r io.Reader) *FrameReader {
	return &FrameReader{r: bufio.NewReaderSize(r, frameBuffer)}
}

// Read reads the next frame into m. A frame over MaxFrameSize is an error;
// io.EOF means the stream ended cleanly between frames.
func (fr *FrameReader) Read(m proto.Message) error {
	return protodelim.UnmarshalOptions{MaxSize: MaxFrameSize}.UnmarshalFrom(fr.r, m)
}

// WriteFrame writes m as one length-prefixed frame.
func WriteFrame(w io.Writer, m proto.Message) error {
	if size := proto.Size(m); size > MaxFrameSize {
		return fmt.Errorf("frame of %d bytes is over the %d limit", size, MaxFrameSize)
	}
	_, err := protodelim.MarshalTo(w, m)
	return err
}
