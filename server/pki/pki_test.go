package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func newCA(t *testing.T) *CA {
	t.Helper()
	ca, created, err := Init(t.TempDir())
	if err != nil || !created {
		t.Fatalf("Init() = %v, %v", created, err)
	}
	return ca
}

func csr(t *testing.T, key any) []byte {
	t.Helper()
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "asks for anything"}}, key)
	if err != nil {
		t.Fatal(err)
	}
	return der
}

func p256(t *testing.T) *ecdsa.PrivateKey {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return key
}

func TestInitCreatesOnceAndReloads(t *testing.T) {
	dir := t.TempDir()
	ca, created, err := Init(dir)
	if err != nil || !created {
		t.Fatalf("first Init() = %v, %v", created, err)
	}
	info, err := os.Stat(filepath.Join(dir, KeyFile))
	if err != nil || info.Mode().Perm() != 0o600 {
		t.Fatalf("CA key: %v, mode %v; want 0600", err, info.Mode().Perm())
	}
	again, created, err := Init(dir)
	if err != nil || created {
		t.Fatalf("second Init() = %v, %v; want the same CA loaded", created, err)
	}
	if !bytes.Equal(ca.Fingerprint(), again.Fingerprint()) || len(ca.FingerprintHex()) != 32*3-1 {
		t.Fatal("the CA changed between loads")
	}
	other := newCA(t)
	if _, err := Load(filepath.Join(dir, CertFile), filepath.Join(t.TempDir(), "missing.key")); err == nil {
		t.Error("Load with a missing key succeeded")
	}
	otherKey := filepath.Join(t.TempDir(), "k.pem")
	os.WriteFile(otherKey, mustRead(t, filepath.Join(filepath.Dir(other.certPathForTest(t)), KeyFile)), 0o600)
	if _, err := Load(filepath.Join(dir, CertFile), otherKey); err == nil || !strings.Contains(err.Error(), "does not belong") {
		t.Errorf("Load with another CA's key: %v", err)
	}
}

func TestSignAndVerifyRobot(t *testing.T) {
	ca := newCA(t)
	cert, err := ca.SignRobot(csr(t, p256(t)), "0190-robot", "win-01", 0)
	if err != nil {
		t.Fatal(err)
	}
	if id, err := RobotID(cert); err != nil || id != "0190-robot" {
		t.Fatalf("RobotID() = %q, %v", id, err)
	}
	if d := cert.NotAfter.Sub(time.Now()); d < 364*24*time.Hour || d > 366*24*time.Hour {
		t.Errorf("a robot certificate lasts %v, want a year", d)
	}
	if cert.Subject.CommonName != "win-01" {
		t.Errorf("subject %q: the request's own subject must not be taken", cert.Subject.CommonName)
	}
	id, _, err := ca.VerifyRobot([][]byte{cert.Raw}, func(string) bool { return false })
	if err != nil || id != "0190-robot" {
		t.Fatalf("VerifyRobot() = %q, %v", id, err)
	}

	t.Run("Revoked", func(t *testing.T) {
		_, _, err := ca.VerifyRobot([][]byte{cert.Raw}, func(s string) bool { return s == Serial(cert) })
		if err == nil || !strings.Contains(err.Error(), "revoked") {
			t.Fatalf("revoked certificate: %v", err)
		}
	})
	t.Run("OtherCA", func(t *testing.T) {
		foreign, err := newCA(t).SignRobot(csr(t, p256(t)), "x", "x", 0)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := ca.VerifyRobot([][]byte{foreign.Raw}, nil); err == nil {
			t.Fatal("a certificate from another CA was accepted")
		}
	})
	t.Run("Expired", func(t *testing.T) {
		short, err := ca.SignRobot(csr(t, p256(t)), "x", "x", time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		ca.now = func() time.Time { return time.Now().Add(time.Hour) }
		defer func() { ca.now = time.Now }()
		if _, _, err := ca.VerifyRobot([][]byte{short.Raw}, nil); err == nil || !strings.Contains(err.Error(), "expired") {
			t.Fatalf("an expired certificate: %v", err)
		}
	})
	t.Run("NoCertificate", func(t *testing.T) {
		if _, _, err := ca.VerifyRobot(nil, nil); err == nil {
			t.Fatal("no certificate was accepted")
		}
	})
	t.Run("ServerCertificateIsNotAClientCertificate", func(t *testing.T) {
		server, err := ca.ServerCertificate([]string{"localhost"}, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := ca.VerifyRobot(server.Certificate, nil); err == nil {
			t.Fatal("the gateway's certificate passed as a robot's")
		}
	})
}

func TestSignRobotRefusesBadRequests(t *testing.T) {
	ca := newCA(t)
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	p384, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	tampered := csr(t, p256(t))
	tampered[len(tampered)-3] ^= 0xff
	tests := []struct {
		name string
		der  []byte
		want string
	}{
		{"RSA", csr(t, rsaKey), "ECDSA P-256"},
		{"P384", csr(t, p384), "ECDSA P-256"},
		{"Tampered", tampered, "certificate request"},
		{"Garbage", []byte("nope"), "certificate request"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := ca.SignRobot(tt.der, "r", "r", 0); err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("SignRobot() = %v, want %q", err, tt.want)
			}
		})
	}
}

func TestServerCertificateChainsToTheCA(t *testing.T) {
	ca := newCA(t)
	server, err := ca.ServerCertificate([]string{"127.0.0.1", "cp.example.com"}, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(server.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	roots := x509.NewCertPool()
	roots.AddCert(ca.Certificate())
	for _, host := range []string{"127.0.0.1", "cp.example.com"} {
		if _, err := leaf.Verify(x509.VerifyOptions{Roots: roots, DNSName: host}); err != nil {
			t.Errorf("verify for %s: %v", host, err)
		}
	}
	if _, err := tls.X509KeyPair(pemCert(server.Certificate[0]), pemKey(t, server.PrivateKey)); err != nil {
		t.Errorf("the key does not match the certificate: %v", err)
	}
}
