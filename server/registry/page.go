package registry

import (
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
)

// Page asks for one page of a list.
type Page struct {
	// Size is the number of rows; 0 means 100, at most 1000.
	Size int
	// Token continues from the page that returned it.
	Token string
}

func (p Page) size() int {
	switch {
	case p.Size <= 0:
		return 100
	case p.Size > 1000:
		return 1000
	}
	return p.Size
}

// pageToken is the content of an opaque page token: the key of the last row
// returned and a fingerprint of the query, so a token cannot be replayed
// against another filter.
type pageToken struct {
	After string `json:"a"`
	Query string `json:"q"`
}

func fingerprint(query ...any) string {
	sum := sha256.Sum256(fmt.Append(nil, query...))
	return hex.EncodeToString(sum[:8])
}

func encodePageToken(after string, query ...any) string {
	b, _ := json.Marshal(pageToken{After: after, Query: fingerprint(query...)})
	return base64.RawURLEncoding.EncodeToString(b)
}

// decodePageToken returns the key to continue after; "" for the first page.
func decodePageToken(token string, query ...any) (string, error) {
	if token == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(token)
	if err != nil {
		return "", ErrInvalidPageToken
	}
	var pt pageToken
	if err := json.Unmarshal(b, &pt); err != nil || pt.After == "" || pt.Query != fingerprint(query...) {
		return "", ErrInvalidPageToken
	}
	return pt.After, nil
}
