package agentv1

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"strings"
	"unicode"
	"unicode/utf8"

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
	// ProtocolVersion is the version of the control-stream protocol this
	// code speaks, sent in Hello. It counts up when a change is one that an
	// older peer would misread; additive fields do not change it.
	ProtocolVersion = 1
	// MinProtocolVersion is the oldest version a control plane built from
	// this code still serves.
	MinProtocolVersion = 1
)

// HelloProtocol is the protocol version a hello claims: robots older than
// the field send none and speak version 1.
func HelloProtocol(h *Hello) int32 {
	if v := h.GetProtocolVersion(); v != 0 {
		return v
	}
	return 1
}

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

// Artifact limits. A robot checks them before it sends, the control plane
// again when it reads.
const (
	// MaxArtifactSize bounds one artifact's bytes.
	MaxArtifactSize = 64 << 20
	// MaxArtifactsPerJob bounds how many artifacts one job keeps.
	MaxArtifactsPerJob = 256
	// MaxArtifactName bounds an artifact's name, in bytes.
	MaxArtifactName = 200
	// MaxArtifactChunk bounds the data of one ArtifactChunk frame: small
	// enough that an artifact never holds up the connection for long, big
	// enough that framing costs nothing.
	MaxArtifactChunk = 256 << 10
	// maxContentType bounds an artifact's content type.
	maxContentType = 255
)

// CheckArtifactName returns an error saying what is wrong with name as an
// artifact's name: it must be a plain file name of at most MaxArtifactName
// bytes.
func CheckArtifactName(name string) error {
	switch {
	case name == "":
		return errors.New("artifact name: empty")
	case len(name) > MaxArtifactName:
		return fmt.Errorf("artifact name %.40q…: %d bytes, over the %d limit", name, len(name), MaxArtifactName)
	case strings.ContainsAny(name, `/\`):
		return fmt.Errorf("artifact name %q: a file name without slashes is needed", name)
	case name == "." || name == "..":
		return fmt.Errorf("artifact name %q: not a file name", name)
	case !utf8.ValidString(name) || strings.ContainsFunc(name, unicode.IsControl):
		return fmt.Errorf("artifact name %q: control characters or invalid UTF-8", name)
	}
	return nil
}

// CheckArtifactHeader returns an error saying what is wrong with h: a bad
// name, a size over MaxArtifactSize, a digest that is not SHA-256.
func CheckArtifactHeader(h *ArtifactHeader) error {
	if h.GetJobId() == "" {
		return errors.New("artifact: no job id")
	}
	if err := CheckArtifactName(h.GetName()); err != nil {
		return err
	}
	switch {
	case h.GetSize() < 0:
		return fmt.Errorf("artifact %q: negative size", h.GetName())
	case h.GetSize() > MaxArtifactSize:
		return fmt.Errorf("artifact %q: %d bytes, over the %d MiB limit", h.GetName(), h.GetSize(), MaxArtifactSize>>20)
	case len(h.GetSha256()) != sha256.Size:
		return fmt.Errorf("artifact %q: the digest is not SHA-256", h.GetName())
	case len(h.GetContentType()) > maxContentType:
		return fmt.Errorf("artifact %q: content type over %d bytes", h.GetName(), maxContentType)
	}
	return nil
}

// WriteArtifact writes a whole artifact stream to w: the header (with
// size and digest filled in from data) and data in chunks. The caller
// closes the stream.
func WriteArtifact(w io.Writer, h *ArtifactHeader, data []byte) error {
	sum := sha256.Sum256(data)
	h = proto.CloneOf(h)
	h.Size, h.Sha256 = int64(len(data)), sum[:]
	if err := CheckArtifactHeader(h); err != nil {
		return err
	}
	if err := WriteFrame(w, &UniStreamHeader{Kind: &UniStreamHeader_Artifact{Artifact: h}}); err != nil {
		return err
	}
	for len(data) > 0 {
		n := min(len(data), MaxArtifactChunk)
		if err := WriteFrame(w, &ArtifactChunk{Data: data[:n]}); err != nil {
			return err
		}
		data = data[n:]
	}
	return nil
}

// ReadArtifact reads the chunks that follow an artifact header to the end
// of the stream and returns the bytes once they match the header's size
// and digest. It never holds more than the header's size, so a robot
// cannot make the control plane allocate past MaxArtifactSize.
func ReadArtifact(fr *FrameReader, h *ArtifactHeader) ([]byte, error) {
	if err := CheckArtifactHeader(h); err != nil {
		return nil, err
	}
	data := make([]byte, 0, h.GetSize())
	chunk := &ArtifactChunk{}
	for {
		chunk.Reset()
		err := fr.Read(chunk)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, fmt.Errorf("artifact %q: %w", h.GetName(), err)
		}
		if len(chunk.GetData()) > MaxArtifactChunk {
			return nil, fmt.Errorf("artifact %q: a chunk of %d bytes, over the %d limit", h.GetName(), len(chunk.GetData()), MaxArtifactChunk)
		}
		if int64(len(data)+len(chunk.GetData())) > h.GetSize() {
			return nil, fmt.Errorf("artifact %q: more bytes than the %d announced", h.GetName(), h.GetSize())
		}
		data = append(data, chunk.GetData()...)
	}
	if int64(len(data)) != h.GetSize() {
		return nil, fmt.Errorf("artifact %q: the stream ended after %d of %d bytes", h.GetName(), len(data), h.GetSize())
	}
	if sum := sha256.Sum256(data); !bytes.Equal(sum[:], h.GetSha256()) {
		return nil, fmt.Errorf("artifact %q: the bytes do not match their SHA-256", h.GetName())
	}
	return data, nil
}
