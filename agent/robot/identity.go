// Package robot is the robot's side of the tunnel: enrolling with a
// one-time token, then holding a mutually authenticated QUIC connection to
// the control plane, reconnecting whenever it is lost.
package robot

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
)

// Files in the robot's directory.
const (
	certFile     = "robot.crt"
	keyFile      = "robot.key"
	caFile       = "ca.crt"
	identityFile = "robot.json"
)

// Identity is what enrolment leaves in the robot's directory.
type Identity struct {
	// Server is the gateway's QUIC address.
	Server  string `json:"server"`
	RobotID string `json:"robot_id"`
	Name    string `json:"name"`
}

// LoadIdentity reads the robot's identity, certificate, key and CA from dir.
func LoadIdentity(dir string) (*Identity, tls.Certificate, *x509.CertPool, error) {
	var id Identity
	b, err := os.ReadFile(filepath.Join(dir, identityFile))
	if errors.Is(err, fs.ErrNotExist) {
		return nil, tls.Certificate{}, nil, fmt.Errorf("%s holds no enrolled robot; run casare-agent enroll --token T --dir %s first", dir, dir)
	}
	if err != nil {
		return nil, tls.Certificate{}, nil, err
	}
	if err := json.Unmarshal(b, &id); err != nil {
		return nil, tls.Certificate{}, nil, fmt.Errorf("%s: %w", identityFile, err)
	}
	if err := finishRenewal(dir); err != nil {
		return nil, tls.Certificate{}, nil, err
	}
	cert, err := tls.LoadX509KeyPair(filepath.Join(dir, certFile), filepath.Join(dir, keyFile))
	if err != nil {
		return nil, tls.Certificate{}, nil, fmt.Errorf("robot certificate: %w", err)
	}
	caPEM, err := os.ReadFile(filepath.Join(dir, caFile))
	if err != nil {
		return nil, tls.Certificate{}, nil, fmt.Errorf("CA certificate: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(caPEM) {
		return nil, tls.Certificate{}, nil, fmt.Errorf("%s: no certificate in it", caFile)
	}
	return &id, cert, pool, nil
}

// ReadCertificate returns the robot's certificate from dir.
func ReadCertificate(dir string) (*x509.Certificate, error) {
	b, err := os.ReadFile(filepath.Join(dir, certFile))
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("%s: no PEM certificate in it", certFile)
	}
	return x509.ParseCertificate(block.Bytes)
}

// finishRenewal completes a certificate renewal a crash interrupted.
func finishRenewal(dir string) error {
	newCert := filepath.Join(dir, certFile+".new")
	if _, err := os.Stat(newCert); err != nil {
		return nil
	}
	newKey := filepath.Join(dir, keyFile+".new")
	if _, err := os.Stat(newKey); err == nil {
		if err := os.Rename(newKey, filepath.Join(dir, keyFile)); err != nil {
			return err
		}
	}
	return os.Rename(newCert, filepath.Join(dir, certFile))
}
