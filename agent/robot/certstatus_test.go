package robot

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"math/big"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestCertStatus(t *testing.T) {
	dir := t.TempDir()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	uri, _ := url.Parse("casare://robot/r1")
	notAfter := time.Now().Add(90 * 24 * time.Hour)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(42), URIs: []*url.URL{uri}, NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, certFile), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)

	var out bytes.Buffer
	if err := CertStatus(&out, dir, time.Now()); err != nil || !strings.Contains(out.String(), "valid, 89 days left") || !strings.Contains(out.String(), "casare://robot/r1") {
		t.Fatalf("valid certificate: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := CertStatus(&out, dir, notAfter.Add(48*time.Hour)); !errors.Is(err, ErrCertificateExpired) || !strings.Contains(out.String(), "EXPIRED 2 days ago") {
		t.Fatalf("expired certificate: %v\n%s", err, out.String())
	}
	if err := CertStatus(&out, t.TempDir(), time.Now()); err == nil {
		t.Fatal("no certificate: no error")
	}
}

func TestJitterStaysWithinBounds(t *testing.T) {
	for range 1000 {
		if d := jitter(time.Second); d < 800*time.Millisecond || d > 1200*time.Millisecond {
			t.Fatalf("jitter(1s) = %v, want within ±20%%", d)
		}
	}
}
