package testkit

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"
)

// This file is the tests' TLS certificate: one self-signed certificate
// for 127.0.0.1 and localhost, made once per test binary (Main), which
// every TLS site of the tests loads instead of having Caddy manage one.
// Caddy v2.11.9 manages certificates in goroutines that read its TLS app
// while the app's Start still writes it, a data race of Caddy's own that
// the race detector reports in whichever test loads a TLS config at that
// moment; with a loaded certificate Caddy manages none.

// CertFile and KeyFile are the tests' certificate and its key, PEM, in
// the storage directory.
func CertFile() string { return filepath.Join(storage, "test-cert.pem") }

// KeyFile is the key of CertFile.
func KeyFile() string { return filepath.Join(storage, "test-key.pem") }

// writeTestCert makes the tests' certificate and key.
func writeTestCert() error {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return err
	}
	tmpl := &x509.Certificate{
		SerialNumber:          big.NewInt(1),
		Subject:               pkix.Name{CommonName: "sse_fanout tests"},
		NotBefore:             time.Now().Add(-time.Hour),
		NotAfter:              time.Now().Add(7 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageDigitalSignature | x509.KeyUsageCertSign,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		IPAddresses:           []net.IP{net.IPv4(127, 0, 0, 1)},
		DNSNames:              []string{"localhost"},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return err
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return err
	}
	if err := os.WriteFile(CertFile(), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return err
	}
	return os.WriteFile(KeyFile(), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}), 0o600)
}

// withTestCert has every server of cfg that serves TLS use the tests'
// certificate (CertFile), loaded, and has Caddy manage none: no
// automation policy (a site's "tls internal" makes one), and no automatic
// certificate for the tests' hosts.
func withTestCert(t testing.TB, cfg []byte) []byte {
	t.Helper()
	var doc map[string]any
	if err := json.Unmarshal(cfg, &doc); err != nil {
		t.Fatal(err)
	}
	apps, _ := doc["apps"].(map[string]any)
	httpApp, _ := apps["http"].(map[string]any)
	servers, _ := httpApp["servers"].(map[string]any)
	// A config serves TLS when its global options are TLSGlobalOptions:
	// Caddy adds its servers' TLS policies itself, from their hosts.
	if apps["tls"] == nil && apps["pki"] == nil {
		return cfg
	}
	for _, s := range servers {
		srv, _ := s.(map[string]any)
		if srv == nil {
			continue
		}
		auto, _ := srv["automatic_https"].(map[string]any)
		if auto == nil {
			auto = map[string]any{}
			srv["automatic_https"] = auto
		}
		auto["skip_certificates"] = []string{"127.0.0.1", "localhost"}
	}
	tlsApp, _ := apps["tls"].(map[string]any)
	if tlsApp == nil {
		tlsApp = map[string]any{}
		apps["tls"] = tlsApp
	}
	certs, _ := tlsApp["certificates"].(map[string]any)
	if certs == nil {
		certs = map[string]any{}
		tlsApp["certificates"] = certs
	}
	certs["load_files"] = []map[string]string{{"certificate": CertFile(), "key": KeyFile()}}
	delete(tlsApp, "automation") // a site's "tls internal" would have Caddy manage one too
	out, err := json.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	return out
}
