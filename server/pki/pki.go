// Package pki is the control plane's certificate authority: it signs the
// robots' certificates (the robot makes its own key and sends a request,
// so no private key ever leaves a robot), the gateway's server certificate,
// and checks the certificates robots present.
package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// Files the CA is kept in, in the data dir.
const (
	CertFile = "ca.crt"
	KeyFile  = "ca.key"
)

// robotURIPrefix starts the URI SAN that names a robot: casare://robot/<id>.
const robotURIPrefix = "casare://robot/"

// DefaultRobotValidity is how long a robot certificate lasts.
const DefaultRobotValidity = 365 * 24 * time.Hour

// caValidity is how long a generated CA lasts; far longer than any robot
// certificate it signs.
const caValidity = 10 * 365 * 24 * time.Hour

// ErrNoCA is returned by Load when the files do not exist.
var ErrNoCA = errors.New("no CA")

// CA signs and checks certificates.
type CA struct {
	cert *x509.Certificate
	key  crypto.Signer
	pool *x509.CertPool
	now  func() time.Time
}

// Init loads the CA from dir, or creates one there (key mode 0600) when
// there is none. created says which.
func Init(dir string) (ca *CA, created bool, err error) {
	certPath, keyPath := filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile)
	ca, err = Load(certPath, keyPath)
	if !errors.Is(err, ErrNoCA) {
		return ca, false, err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, false, fmt.Errorf("create CA: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, false, fmt.Errorf("create CA: %w", err)
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          newSerial(),
		Subject:               pkix.Name{CommonName: "CasareRPA control plane CA", Organization: []string{"CasareRPA"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLenZero:        true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return nil, false, fmt.Errorf("create CA: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, false, fmt.Errorf("create CA: %w", err)
	}
	// The key first: a certificate without its key would be a CA that
	// Load accepts and nothing can sign with.
	if err := writeFile(keyPath, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER}), 0o600); err != nil {
		return nil, false, err
	}
	if err := writeFile(certPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		return nil, false, err
	}
	ca, err = Load(certPath, keyPath)
	return ca, true, err
}

func writeFile(path string, data []byte, mode fs.FileMode) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("write %s: %w", path, err)
	}
	return f.Close()
}

// Load reads a CA certificate and key from PEM files. ErrNoCA when neither
// exists.
func Load(certPath, keyPath string) (*CA, error) {
	certPEM, certErr := os.ReadFile(certPath)
	keyPEM, keyErr := os.ReadFile(keyPath)
	if errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist) {
		return nil, ErrNoCA
	}
	if certErr != nil {
		return nil, fmt.Errorf("read CA certificate: %w", certErr)
	}
	if keyErr != nil {
		return nil, fmt.Errorf("read CA key: %w", keyErr)
	}
	block, _ := pem.Decode(certPEM)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, fmt.Errorf("%s: no PEM certificate in it", certPath)
	}
	cert, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", certPath, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("%s: not a CA certificate", certPath)
	}
	kblock, _ := pem.Decode(keyPEM)
	if kblock == nil {
		return nil, fmt.Errorf("%s: no PEM key in it", keyPath)
	}
	key, err := parseKey(kblock)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", keyPath, err)
	}
	if !publicKeysEqual(cert.PublicKey, key.Public()) {
		return nil, fmt.Errorf("%s does not belong to %s", keyPath, certPath)
	}
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	return &CA{cert: cert, key: key, pool: pool, now: time.Now}, nil
}

func parseKey(block *pem.Block) (crypto.Signer, error) {
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("unsupported key type %q", block.Type)
	}
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, errors.New("the key cannot sign")
	}
	return signer, nil
}

func publicKeysEqual(a, b crypto.PublicKey) bool {
	eq, ok := a.(interface{ Equal(crypto.PublicKey) bool })
	return ok && eq.Equal(b)
}

// Certificate returns the CA certificate.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// Fingerprint returns the SHA-256 of the CA certificate, which enrollment
// tokens carry so a new robot can trust the control plane on first contact.
func (ca *CA) Fingerprint() []byte {
	sum := sha256.Sum256(ca.cert.Raw)
	return sum[:]
}

// FingerprintHex returns the fingerprint as colon-separated hex, the way
// people compare fingerprints.
func (ca *CA) FingerprintHex() string {
	fp := ca.Fingerprint()
	parts := make([]string, len(fp))
	for i, b := range fp {
		parts[i] = fmt.Sprintf("%02X", b)
	}
	return strings.Join(parts, ":")
}

func newSerial() *big.Int {
	// 128 random bits: unique without coordination between replicas.
	serial, _ := rand.Int(rand.Reader, new(big.Int).Lsh(big.NewInt(1), 127))
	return serial.Add(serial, big.NewInt(1))
}

// ServerCertificate issues a certificate for the gateway, valid for the
// host names and addresses given, chained to the CA.
func (ca *CA) ServerCertificate(hosts []string, validity time.Duration) (tls.Certificate, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return tls.Certificate{}, err
	}
	now := ca.now()
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		Subject:      pkix.Name{CommonName: "CasareRPA gateway"},
		NotBefore:    now.Add(-time.Hour),
		NotAfter:     now.Add(validity),
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	for _, h := range hosts {
		if ip := net.ParseIP(h); ip != nil {
			tmpl.IPAddresses = append(tmpl.IPAddresses, ip)
		} else if h != "" {
			tmpl.DNSNames = append(tmpl.DNSNames, h)
		}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("issue gateway certificate: %w", err)
	}
	return tls.Certificate{Certificate: [][]byte{der, ca.cert.Raw}, PrivateKey: key}, nil
}

// SignRobot signs a robot's certificate request: the key must be ECDSA
// P-256 and the request's signature valid. The robot id goes in a URI SAN;
// nothing the request asks for beyond its key is taken.
func (ca *CA) SignRobot(csrDER []byte, robotID, name string, validity time.Duration) (*x509.Certificate, error) {
	csr, err := x509.ParseCertificateRequest(csrDER)
	if err != nil {
		return nil, fmt.Errorf("certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request: bad signature: %w", err)
	}
	pub, ok := csr.PublicKey.(*ecdsa.PublicKey)
	if !ok || pub.Curve != elliptic.P256() {
		return nil, errors.New("certificate request: the key must be ECDSA P-256")
	}
	if validity <= 0 {
		validity = DefaultRobotValidity
	}
	uri, err := url.Parse(robotURIPrefix + robotID)
	if err != nil {
		return nil, fmt.Errorf("robot id %q: %w", robotID, err)
	}
	now := ca.now()
	notAfter := now.Add(validity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber: newSerial(),
		Subject:      pkix.Name{CommonName: name, Organization: []string{"CasareRPA robots"}},
		URIs:         []*url.URL{uri},
		NotBefore:    now.Add(-5 * time.Minute),
		NotAfter:     notAfter,
		KeyUsage:     x509.KeyUsageDigitalSignature,
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
	if err != nil {
		return nil, fmt.Errorf("sign robot certificate: %w", err)
	}
	return x509.ParseCertificate(der)
}

// RobotID returns the robot id a certificate names, or an error when it
// names none.
func RobotID(cert *x509.Certificate) (string, error) {
	for _, u := range cert.URIs {
		if s := u.String(); strings.HasPrefix(s, robotURIPrefix) && len(s) > len(robotURIPrefix) {
			return s[len(robotURIPrefix):], nil
		}
	}
	return "", errors.New("the certificate names no robot")
}

// Errors of VerifyRobot that callers tell apart.
var (
	ErrNoCertificate = errors.New("no client certificate")
	ErrRevoked       = errors.New("is revoked")
)

// VerifyRobot checks a certificate chain a robot presented: signed by this
// CA, valid now, meant for client authentication, naming a robot, and not
// revoked (revoked reports whether a serial is on the revocation list). It
// returns the robot id.
func (ca *CA) VerifyRobot(rawCerts [][]byte, revoked func(serial string) bool) (string, *x509.Certificate, error) {
	if len(rawCerts) == 0 {
		return "", nil, ErrNoCertificate
	}
	cert, err := x509.ParseCertificate(rawCerts[0])
	if err != nil {
		return "", nil, fmt.Errorf("client certificate: %w", err)
	}
	_, err = cert.Verify(x509.VerifyOptions{
		Roots:       ca.pool,
		CurrentTime: ca.now(),
		KeyUsages:   []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth},
	})
	if err != nil {
		return "", nil, fmt.Errorf("client certificate: %w", err)
	}
	id, err := RobotID(cert)
	if err != nil {
		return "", nil, err
	}
	if revoked != nil && revoked(Serial(cert)) {
		return "", nil, fmt.Errorf("the certificate of robot %s (serial %s) %w", id, Serial(cert), ErrRevoked)
	}
	return id, cert, nil
}

// Serial returns a certificate's serial as the registry stores it.
func Serial(cert *x509.Certificate) string {
	return cert.SerialNumber.Text(16)
}
