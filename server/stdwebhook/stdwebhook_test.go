package stdwebhook

import (
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"
)

// The example of the Standard Webhooks specification, so a sender using
// any of its libraries is understood.
func TestSignMatchesTheSpecification(t *testing.T) {
	key, err := DecodeSecret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
	if err != nil {
		t.Fatal(err)
	}
	got := Sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", time.Unix(1614265330, 0), []byte(`{"test": 2432232314}`))
	if want := "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="; got != want {
		t.Fatalf("Sign = %q, want %q", got, want)
	}
}

func TestVerify(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	key, _ := DecodeSecret(NewSecret())
	other, _ := DecodeSecret(NewSecret())
	body := []byte(`{"order":42}`)
	signed := func(at time.Time, keys ...[]byte) Request {
		var sigs []string
		for _, k := range keys {
			sigs = append(sigs, Sign(k, "msg_1", at, body))
		}
		return Request{ID: "msg_1", Timestamp: strconv.FormatInt(at.Unix(), 10), Signature: strings.Join(sigs, " "), Body: body}
	}
	tests := []struct {
		name string
		req  Request
		keys [][]byte
		want error
	}{
		{"Good", signed(now, key), [][]byte{key}, nil},
		{"GoodAtTheEdgeOfTheTolerance", signed(now.Add(-DefaultTolerance), key), [][]byte{key}, nil},
		{"OneOfSeveralSignatures", signed(now, other, key), [][]byte{key}, nil},
		{"OneOfSeveralKeys", signed(now, key), [][]byte{other, key}, nil},
		{"OtherVersionsSkipped", func() Request { r := signed(now, key); r.Signature = "v1a,AAAA " + r.Signature; return r }(), [][]byte{key}, nil},
		{"WrongKey", signed(now, other), [][]byte{key}, ErrNoMatch},
		{"NoKeys", signed(now, key), nil, ErrNoMatch},
		{"BodyChanged", func() Request { r := signed(now, key); r.Body = []byte(`{"order":43}`); return r }(), [][]byte{key}, ErrNoMatch},
		{"IDChanged", func() Request { r := signed(now, key); r.ID = "msg_2"; return r }(), [][]byte{key}, ErrNoMatch},
		{"TimestampChanged", func() Request {
			r := signed(now, key)
			r.Timestamp = strconv.FormatInt(now.Unix()+1, 10)
			return r
		}(), [][]byte{key}, ErrNoMatch},
		{"Stale", signed(now.Add(-DefaultTolerance-time.Second), key), [][]byte{key}, ErrStale},
		{"Future", signed(now.Add(DefaultTolerance+time.Second), key), [][]byte{key}, ErrStale},
		{"MissingID", func() Request { r := signed(now, key); r.ID = ""; return r }(), [][]byte{key}, ErrMissing},
		{"MissingTimestamp", func() Request { r := signed(now, key); r.Timestamp = ""; return r }(), [][]byte{key}, ErrMissing},
		{"MissingSignature", func() Request { r := signed(now, key); r.Signature = ""; return r }(), [][]byte{key}, ErrMissing},
		{"OnlyOtherVersions", func() Request { r := signed(now, key); r.Signature = "v1a,AAAA"; return r }(), [][]byte{key}, ErrMissing},
		{"TimestampNotANumber", func() Request { r := signed(now, key); r.Timestamp = "-1"; return r }(), [][]byte{key}, ErrMalformed},
		{"TimestampHuge", func() Request { r := signed(now, key); r.Timestamp = strings.Repeat("9", 40); return r }(), [][]byte{key}, ErrMalformed},
		{"SignatureNotBase64", func() Request { r := signed(now, key); r.Signature = "v1,!!!"; return r }(), [][]byte{key}, ErrMalformed},
		{"SignatureShort", func() Request { r := signed(now, key); r.Signature = "v1,AAAA"; return r }(), [][]byte{key}, ErrMalformed},
		{"SignatureWithoutVersion", func() Request { r := signed(now, key); r.Signature = "abc"; return r }(), [][]byte{key}, ErrMalformed},
		{"TooManySignatures", func() Request {
			r := signed(now, key)
			r.Signature = strings.Repeat(r.Signature+" ", MaxSignatures+1)
			return r
		}(), [][]byte{key}, ErrMalformed},
		{"IDWithControlCharacter", func() Request { r := signed(now, key); r.ID = "msg\x00"; return r }(), [][]byte{key}, ErrMalformed},
		{"IDTooLong", func() Request { r := signed(now, key); r.ID = strings.Repeat("a", MaxIDLength+1); return r }(), [][]byte{key}, ErrMalformed},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := Verify(tt.keys, tt.req, now, DefaultTolerance)
			if tt.want == nil {
				if err != nil {
					t.Fatalf("Verify = %v, want nil", err)
				}
				return
			}
			if !errors.Is(err, tt.want) {
				t.Fatalf("Verify = %v, want %v", err, tt.want)
			}
			if !strings.HasPrefix(err.Error(), "webhook-") {
				t.Errorf("error %q does not name the header at fault", err)
			}
		})
	}
}

func TestSecrets(t *testing.T) {
	s := NewSecret()
	if !strings.HasPrefix(s, SecretPrefix) || s == NewSecret() {
		t.Fatalf("NewSecret = %q: want whsec_ and a new value each time", s)
	}
	key, err := DecodeSecret(s)
	if err != nil || len(key) != keyBytes {
		t.Fatalf("DecodeSecret = %d bytes, %v", len(key), err)
	}
	for _, bad := range []string{"", "whsec_", "whsec_!!"} {
		if _, err := DecodeSecret(bad); err == nil {
			t.Errorf("DecodeSecret(%q) passed", bad)
		}
	}
}

// FuzzParseSignatures holds the header parser to its limits on any input:
// it never panics, and what it accepts is only 32-byte signatures, at most
// MaxSignatures of them.
func FuzzParseSignatures(f *testing.F) {
	key, _ := DecodeSecret(NewSecret())
	f.Add(Sign(key, "id", time.Unix(1, 0), nil))
	f.Add("v1,AAAA v1a,BBBB")
	f.Add("v1, v1,")
	f.Add(" \t v2,x\nv1,abc=")
	f.Fuzz(func(t *testing.T, header string) {
		sigs, err := ParseSignatures(header)
		if err != nil {
			if sigs != nil {
				t.Fatal("signatures returned with an error")
			}
			return
		}
		if len(sigs) == 0 || len(sigs) > MaxSignatures {
			t.Fatalf("%d signatures accepted", len(sigs))
		}
		for _, s := range sigs {
			if len(s) != 32 {
				t.Fatalf("a signature of %d bytes accepted", len(s))
			}
		}
	})
}
