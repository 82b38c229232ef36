package robot

import (
	"fmt"
	"io"
	"time"
)

// ErrCertificateExpired is returned by CertStatus for an expired certificate.
var ErrCertificateExpired = fmt.Errorf("the robot certificate has expired")

// CertStatus writes the robot certificate's validity to w and returns
// ErrCertificateExpired when it is no longer valid.
func CertStatus(w io.Writer, dir string, now time.Time) error {
	cert, err := ReadCertificate(dir)
	if err != nil {
		return fmt.Errorf("read the robot certificate in %s: %w", dir, err)
	}
	left := cert.NotAfter.Sub(now)
	id := "-"
	for _, u := range cert.URIs {
		id = u.String()
	}
	fmt.Fprintf(w, "robot:      %s\n", id)
	fmt.Fprintf(w, "serial:     %s\n", cert.SerialNumber.Text(16))
	fmt.Fprintf(w, "valid from: %s\n", cert.NotBefore.UTC().Format(time.RFC3339))
	fmt.Fprintf(w, "valid to:   %s\n", cert.NotAfter.UTC().Format(time.RFC3339))
	if left <= 0 {
		fmt.Fprintf(w, "status:     EXPIRED %d days ago\n", int(-left.Hours()/24))
		return ErrCertificateExpired
	}
	fmt.Fprintf(w, "status:     valid, %d days left\n", int(left.Hours()/24))
	return nil
}
