package robot

import (
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"time"

	"github.com/quic-go/quic-go"

	agentv1 "github.com/casarerpa/casare/rpc/casare/agent/v1"
)

// EnrollOptions configures Enroll.
type EnrollOptions struct {
	Token string
	Dir   string
	// Server overrides the address in the token.
	Server  string
	Version string
}

// Enroll spends an enrollment token: it trusts the control plane by the CA
// fingerprint in the token, makes the robot's own key (which never leaves
// the robot), has its certificate signed, and stores certificate, key
// (0600), CA and identity in the directory. On any failure it writes
// nothing.
func Enroll(ctx context.Context, opts EnrollOptions) (*Identity, error) {
	token, err := agentv1.ParseToken(opts.Token)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(filepath.Join(opts.Dir, identityFile)); err == nil {
		return nil, fmt.Errorf("%s already holds an enrolled robot; use another --dir", opts.Dir)
	}
	server := token.GetServer()
	if opts.Server != "" {
		server = opts.Server
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, err
	}
	hostname, _ := os.Hostname()
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: hostname}}, key)
	if err != nil {
		return nil, err
	}
	tlsConf := &tls.Config{
		MinVersion: tls.VersionTLS13,
		NextProtos: []string{agentv1.ALPNEnroll},
		// The robot has no CA yet: it accepts a server whose chain holds
		// the CA the token names, and nothing else.
		InsecureSkipVerify:    true,
		VerifyPeerCertificate: verifyByFingerprint(token.GetCaFingerprint()),
	}
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	conn, err := quic.DialAddr(ctx, server, tlsConf, &quic.Config{MaxIdleTimeout: 30 * time.Second})
	if err != nil {
		return nil, fmt.Errorf("reach the control plane at %s: %w", server, err)
	}
	defer conn.CloseWithError(0, "enrolled")
	stream, err := conn.OpenStreamSync(ctx)
	if err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	req := &agentv1.EnrollRequest{Secret: token.GetSecret(), Csr: csr, Hostname: hostname, Os: runtime.GOOS, Version: opts.Version}
	if err := agentv1.WriteFrame(stream, req); err != nil {
		return nil, fmt.Errorf("enrol: %w", err)
	}
	stream.Close()
	res := &agentv1.EnrollResponse{}
	if err := agentv1.NewFrameReader(stream).Read(res); err != nil {
		return nil, fmt.Errorf("enrol: no answer from the control plane: %w", err)
	}
	if res.GetError() != "" {
		return nil, fmt.Errorf("the control plane refused: %s", res.GetError())
	}
	id := &Identity{Server: server, RobotID: res.GetRobotId(), Name: res.GetRobotName()}
	if err := save(opts.Dir, id, key, res); err != nil {
		return nil, err
	}
	return id, nil
}

func verifyByFingerprint(fingerprint []byte) func([][]byte, [][]*x509.Certificate) error {
	return func(raw [][]byte, _ [][]*x509.Certificate) error {
		if len(raw) == 0 {
			return errors.New("the server sent no certificate")
		}
		var ca *x509.Certificate
		for _, der := range raw[1:] {
			sum := sha256.Sum256(der)
			if bytes.Equal(sum[:], fingerprint) {
				ca, _ = x509.ParseCertificate(der)
			}
		}
		if ca == nil {
			return errors.New("the server's CA does not match the fingerprint in the token: not the control plane that made it")
		}
		leaf, err := x509.ParseCertificate(raw[0])
		if err != nil {
			return err
		}
		pool := x509.NewCertPool()
		pool.AddCert(ca)
		_, err = leaf.Verify(x509.VerifyOptions{Roots: pool})
		return err
	}
}

// save writes the robot's files into a fresh temporary directory and
// renames each into place, so a failure leaves no half-enrolled robot.
func save(dir string, id *Identity, key *ecdsa.PrivateKey, res *agentv1.EnrollResponse) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	idJSON, err := json.MarshalIndent(id, "", "  ")
	if err != nil {
		return err
	}
	files := []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600},
		{certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: res.GetCertificate()}), 0o644},
		{caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: res.GetCa()}), 0o644},
		// The identity last: its presence is what marks the robot enrolled.
		{identityFile, append(idJSON, '\n'), 0o644},
	}
	tmp, err := os.MkdirTemp(dir, ".enroll-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	for _, f := range files {
		if err := os.WriteFile(filepath.Join(tmp, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	for _, f := range files {
		if err := os.Rename(filepath.Join(tmp, f.name), filepath.Join(dir, f.name)); err != nil {
			return err
		}
	}
	return nil
}

// saveCertificate replaces the robot's key and certificate: both are
// written beside the old ones, then renamed into place, the key first. A
// crash between the renames leaves robot.crt.new, which LoadIdentity
// finishes installing.
func saveCertificate(dir string, key *ecdsa.PrivateKey, certDER []byte) error {
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return err
	}
	for _, f := range []struct {
		name string
		data []byte
		mode os.FileMode
	}{
		{keyFile + ".new", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600},
		{certFile + ".new", pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: certDER}), 0o644},
	} {
		if err := os.WriteFile(filepath.Join(dir, f.name), f.data, f.mode); err != nil {
			return err
		}
	}
	if err := os.Rename(filepath.Join(dir, keyFile+".new"), filepath.Join(dir, keyFile)); err != nil {
		return err
	}
	return os.Rename(filepath.Join(dir, certFile+".new"), filepath.Join(dir, certFile))
}

// EnrollFromFile enrols the robot in opts.Dir with the token held in file,
// unless the directory holds an enrolled robot already: then the file is
// not read, so a robot restarted with the same spent token keeps its
// identity. It lets a container or service enrol itself on first start
// from a mounted secret. enrolled says whether it enrolled now.
func EnrollFromFile(ctx context.Context, opts EnrollOptions, file string) (enrolled bool, err error) {
	if _, err := os.Stat(filepath.Join(opts.Dir, identityFile)); err == nil {
		return false, nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return false, fmt.Errorf("--enroll-token-file: %w", err)
	}
	opts.Token = string(bytes.TrimSpace(b))
	if opts.Token == "" {
		return false, fmt.Errorf("--enroll-token-file: %s is empty", file)
	}
	if _, err := Enroll(ctx, opts); err != nil {
		return false, err
	}
	return true, nil
}
