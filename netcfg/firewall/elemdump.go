package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"deskhost/internal/nsutil"
	"deskhost/netcfg/cidrset"
)

// dumpRanges reads an IPv4 interval set's elements with a raw netlink dump.
//
// google/nftables' GetSetElements receives into page-sized buffers, and the
// kernel sizes its dump messages after the largest buffer the reader offered:
// ~150 elements per round trip. The rbtree set restarts its walk from the
// first element on every round, so a 100,000-range set took ~6 s to read
// here. Offering 64 KiB buffers makes the kernel fill ~32 KiB per round and
// cuts the reading several-fold; parsing in place avoids an allocation per
// attribute.
func dumpRanges(ns netns.NsHandle, fam uint8, table, set string) (cidrset.Set, error) {
	var fd int
	err := nsutil.Do(ns, func() (err error) {
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)

	// request: nlmsghdr + nfgenmsg + NFTA_SET_ELEM_LIST_TABLE + _SET
	attr := func(b []byte, typ uint16, val []byte) []byte {
		l := 4 + len(val)
		b = binary.NativeEndian.AppendUint16(b, uint16(l))
		b = binary.NativeEndian.AppendUint16(b, typ)
		b = append(b, val...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	body := []byte{fam, unix.NFNETLINK_V0, 0, 0}
	body = attr(body, unix.NFTA_SET_ELEM_LIST_TABLE, append([]byte(table), 0))
	body = attr(body, unix.NFTA_SET_ELEM_LIST_SET, append([]byte(set), 0))
	const seq = 1
	req := binary.NativeEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+len(body)))
	req = binary.NativeEndian.AppendUint16(req, unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETSETELEM)
	req = binary.NativeEndian.AppendUint16(req, unix.NLM_F_REQUEST|unix.NLM_F_DUMP)
	req = binary.NativeEndian.AppendUint32(req, seq)
	req = binary.NativeEndian.AppendUint32(req, 0)
	req = append(req, body...)
	if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netlink send: %w", err)
	}

	var starts, ends []uint32 // elements in kernel order, sorted below
	buf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, buf, 0)
		if err != nil {
			if errors.Is(err, unix.EINTR) {
				continue
			}
			return nil, fmt.Errorf("netlink receive: %w", err)
		}
		b := buf[:n]
		for len(b) >= unix.NLMSG_HDRLEN {
			l := int(binary.NativeEndian.Uint32(b[0:4]))
			typ := binary.NativeEndian.Uint16(b[4:6])
			if l < unix.NLMSG_HDRLEN || l > len(b) {
				return nil, errors.New("netlink: truncated message")
			}
			msg := b[unix.NLMSG_HDRLEN:l]
			if al := (l + 3) &^ 3; al <= len(b) {
				b = b[al:]
			} else {
				b = b[len(b):]
			}
			switch typ {
			case unix.NLMSG_DONE:
				return finishRanges(starts, ends)
			case unix.NLMSG_ERROR:
				if len(msg) >= 4 {
					if e := int32(binary.NativeEndian.Uint32(msg[:4])); e != 0 {
						return nil, os.NewSyscallError("netlink dump", unix.Errno(-e))
					}
				}
				continue
			}
			if len(msg) < 4 {
				continue
			}
			forAttrs(msg[4:], func(t uint16, v []byte) {
				if t&0x3fff != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
					return
				}
				forAttrs(v, func(_ uint16, el []byte) {
					var key []byte
					var flags uint32
					forAttrs(el, func(t uint16, v []byte) {
						switch t & 0x3fff {
						case unix.NFTA_SET_ELEM_KEY:
							forAttrs(v, func(t uint16, v []byte) {
								if t&0x3fff == unix.NFTA_DATA_VALUE {
									key = v
								}
							})
						case unix.NFTA_SET_ELEM_FLAGS:
							if len(v) == 4 {
								flags = binary.BigEndian.Uint32(v)
							}
						}
					})
					if len(key) != 4 {
						return
					}
					k := binary.BigEndian.Uint32(key)
					if flags&unix.NFT_SET_ELEM_INTERVAL_END != 0 {
						ends = append(ends, k)
					} else {
						starts = append(starts, k)
					}
				})
			})
		}
	}
}

func forAttrs(b []byte, fn func(typ uint16, val []byte)) {
	for len(b) >= 4 {
		l := int(binary.NativeEndian.Uint16(b[0:2]))
		if l < 4 || l > len(b) {
			return
		}
		fn(binary.NativeEndian.Uint16(b[2:4]), b[4:l])
		al := (l + 3) &^ 3
		if al > len(b) {
			return
		}
		b = b[al:]
	}
}

func finishRanges(starts, ends []uint32) (cidrset.Set, error) {
	evs := make([]elemEvent, 0, len(starts)+len(ends))
	for _, k := range starts {
		evs = append(evs, elemEvent{k, false})
	}
	for _, k := range ends {
		evs = append(evs, elemEvent{k, true})
	}
	return eventsToRanges(evs)
}

// probeElements asks the kernel for specific set elements (NFT_MSG_GETSETELEM
// without dump): it answers every element it holds exactly (same key, same
// interval-end flag) and fails the request with ENOENT at the first it does
// not. One request carries at most elemsPerMessage elements.
func probeElements(ns netns.NsHandle, fam uint8, table, set string, keys []elemEvent) error {
	if len(keys) == 0 {
		return nil
	}
	var fd int
	err := nsutil.Do(ns, func() (err error) {
		fd, err = unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		return err
	})
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	attr := func(b []byte, typ uint16, val []byte) []byte {
		b = binary.NativeEndian.AppendUint16(b, uint16(4+len(val)))
		b = binary.NativeEndian.AppendUint16(b, typ)
		b = append(b, val...)
		for len(b)%4 != 0 {
			b = append(b, 0)
		}
		return b
	}
	buf := make([]byte, 64<<10)
	for seq := uint32(1); len(keys) > 0; seq++ {
		n := min(len(keys), elemsPerMessage)
		batch := keys[:n]
		keys = keys[n:]
		var list []byte
		for i, k := range batch {
			var el []byte
			if k.end {
				el = attr(el, unix.NFTA_SET_ELEM_FLAGS, binary.BigEndian.AppendUint32(nil, unix.NFT_SET_ELEM_INTERVAL_END))
			}
			el = attr(el, unix.NFTA_SET_ELEM_KEY|unix.NLA_F_NESTED, attr(nil, unix.NFTA_DATA_VALUE, binary.BigEndian.AppendUint32(nil, k.k)))
			list = attr(list, uint16(i+1)|unix.NLA_F_NESTED, el)
		}
		body := []byte{fam, unix.NFNETLINK_V0, 0, 0}
		body = attr(body, unix.NFTA_SET_ELEM_LIST_TABLE, append([]byte(table), 0))
		body = attr(body, unix.NFTA_SET_ELEM_LIST_SET, append([]byte(set), 0))
		body = attr(body, unix.NFTA_SET_ELEM_LIST_ELEMENTS|unix.NLA_F_NESTED, list)
		req := binary.NativeEndian.AppendUint32(nil, uint32(unix.NLMSG_HDRLEN+len(body)))
		req = binary.NativeEndian.AppendUint16(req, unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETSETELEM)
		req = binary.NativeEndian.AppendUint16(req, unix.NLM_F_REQUEST|unix.NLM_F_ACK)
		req = binary.NativeEndian.AppendUint32(req, seq)
		req = binary.NativeEndian.AppendUint32(req, 0)
		req = append(req, body...)
		if err := unix.Sendto(fd, req, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			return fmt.Errorf("netlink send: %w", err)
		}
		found := 0
	recv:
		for {
			k, _, err := unix.Recvfrom(fd, buf, 0)
			if err != nil {
				if errors.Is(err, unix.EINTR) {
					continue
				}
				return fmt.Errorf("netlink receive: %w", err)
			}
			b := buf[:k]
			for len(b) >= unix.NLMSG_HDRLEN {
				l := int(binary.NativeEndian.Uint32(b[0:4]))
				typ := binary.NativeEndian.Uint16(b[4:6])
				if l < unix.NLMSG_HDRLEN || l > len(b) {
					return errors.New("netlink: truncated message")
				}
				msg := b[unix.NLMSG_HDRLEN:l]
				b = b[min(len(b), (l+3)&^3):]
				if typ == unix.NLMSG_ERROR {
					if e := int32(binary.NativeEndian.Uint32(msg[:4])); e != 0 {
						missing := batch[min(found, len(batch)-1)]
						return fmt.Errorf("element %s (end=%v) not in the kernel: %w", cidrset.U32ToAddr(missing.k), missing.end, unix.Errno(-e))
					}
					break recv
				}
				found++
			}
		}
		if found != len(batch) {
			return fmt.Errorf("kernel returned %d of %d probed elements", found, len(batch))
		}
	}
	return nil
}
