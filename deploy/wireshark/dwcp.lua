-- Wireshark / tshark dissector for DWCP (docs/protocol.md), UDP port 7470.
--
-- Decodes the 48-byte header (magic, version, frame type, flags, stream, connection, payload
-- length, sequence, object, offset, codec, baseline), the trailer (CRC32C, verified, or the
-- 16-byte AEAD tag of SEALED frames), and the fixed parts of HELLO/HELLO_ACK, ACK (with SACK
-- ranges), NACK, PROBE and PROBE_ACK payloads. Problems (bad magic, reserved bits, length
-- mismatch, CRC mismatch) are shown as expert info; the frame is still dissected.
--
-- Use: tshark -X lua_script:deploy/wireshark/dwcp.lua -Y dwcp -r capture.pcapng
--      (or copy into ~/.local/lib/wireshark/plugins/). Other ports: "Decode As..." -> DWCP,
--      or tshark -d udp.port==PORT,dwcp. Tested by deploy/check.sh on a capture it makes.

local dwcp = Proto("dwcp", "DWCP transfer protocol")

local frame_types = {
  [0x01] = "HELLO", [0x02] = "HELLO_ACK", [0x10] = "DATA", [0x11] = "ACK", [0x12] = "NACK",
  [0x20] = "PROBE", [0x21] = "PROBE_ACK", [0x30] = "KEEPALIVE", [0x3F] = "CLOSE",
}
local codecs = {
  [0] = "raw", [1] = "zero", [2] = "dup", [3] = "xor-delta+zero-run", [4] = "zstd",
  [5] = "hde-block-container",
}

local f = dwcp.fields
f.magic = ProtoField.uint16("dwcp.magic", "Magic", base.HEX)
f.version = ProtoField.uint8("dwcp.version", "Version", base.DEC)
f.type = ProtoField.uint8("dwcp.type", "Frame type", base.HEX, frame_types)
f.flags = ProtoField.uint16("dwcp.flags", "Flags", base.HEX)
f.flag_sealed = ProtoField.bool("dwcp.flags.sealed", "SEALED", 16, nil, 0x0001)
f.flag_last = ProtoField.bool("dwcp.flags.last", "LAST", 16, nil, 0x0002)
f.flag_retx = ProtoField.bool("dwcp.flags.retransmit", "RETRANSMIT", 16, nil, 0x0004)
f.flag_reserved = ProtoField.uint16("dwcp.flags.reserved", "Reserved bits", base.HEX, nil, 0xFFF8)
f.stream = ProtoField.uint16("dwcp.stream", "Stream id", base.DEC)
f.conn = ProtoField.uint32("dwcp.conn", "Connection id", base.HEX)
f.plen = ProtoField.uint32("dwcp.payload_len", "Payload length", base.DEC)
f.seq = ProtoField.uint64("dwcp.seq", "Sequence number", base.DEC)
f.object = ProtoField.uint64("dwcp.object", "Object id", base.DEC)
f.offset = ProtoField.uint64("dwcp.offset", "Chunk offset", base.DEC)
f.codec = ProtoField.uint8("dwcp.codec", "Codec", base.DEC, codecs)
f.reserved1 = ProtoField.uint8("dwcp.reserved1", "Reserved", base.HEX)
f.reserved2 = ProtoField.uint16("dwcp.reserved2", "Reserved", base.HEX)
f.baseline = ProtoField.uint32("dwcp.baseline", "Baseline id", base.DEC)
f.payload = ProtoField.bytes("dwcp.payload", "Payload")
f.crc = ProtoField.uint32("dwcp.crc32c", "CRC32C", base.HEX)
f.crc_ok = ProtoField.bool("dwcp.crc32c.ok", "CRC32C valid")
f.tag = ProtoField.bytes("dwcp.tag", "AEAD tag")
-- HELLO / HELLO_ACK
f.h_versions = ProtoField.uint16("dwcp.hello.versions", "Versions", base.HEX)
f.h_caps = ProtoField.uint16("dwcp.hello.capabilities", "Capabilities", base.HEX)
f.h_streams = ProtoField.uint16("dwcp.hello.max_streams", "Max streams", base.DEC)
f.h_kxlen = ProtoField.uint16("dwcp.hello.key_exchange_len", "Key exchange length", base.DEC)
f.h_maxp = ProtoField.uint32("dwcp.hello.max_payload", "Max payload", base.DEC)
f.h_chunk = ProtoField.uint32("dwcp.hello.chunk_size", "Chunk size", base.DEC)
f.h_nonce = ProtoField.bytes("dwcp.hello.nonce", "Session nonce")
-- ACK / NACK
f.a_stream = ProtoField.uint16("dwcp.ack.stream", "Acked stream", base.DEC)
f.a_count = ProtoField.uint16("dwcp.ack.ranges", "Range count", base.DEC)
f.a_delay = ProtoField.uint32("dwcp.ack.delay_us", "Ack delay (us)", base.DEC)
f.a_cum = ProtoField.uint64("dwcp.ack.cumulative", "Cumulative seq", base.DEC)
f.a_ts = ProtoField.uint64("dwcp.ack.recv_ts_ns", "Receive timestamp (ns)", base.DEC)
f.a_rate = ProtoField.uint64("dwcp.ack.rate", "Receive rate (B/s)", base.DEC)
f.r_start = ProtoField.uint64("dwcp.range.start", "Range start", base.DEC)
f.r_end = ProtoField.uint64("dwcp.range.end", "Range end", base.DEC)
-- PROBE / PROBE_ACK
f.p_ts = ProtoField.uint64("dwcp.probe.ts_ns", "Timestamp (ns)", base.DEC)
f.p_seq = ProtoField.uint64("dwcp.probe.seq", "Probe seq", base.DEC)
f.p_len = ProtoField.uint32("dwcp.probe.len", "Probe length", base.DEC)
f.p_delay = ProtoField.uint32("dwcp.probe.delay_us", "Ack delay (us)", base.DEC)

local ef_magic = ProtoExpert.new("dwcp.bad_magic", "Bad magic (not 0xDC57)", expert.group.MALFORMED, expert.severity.ERROR)
local ef_len = ProtoExpert.new("dwcp.length_mismatch", "Datagram length != 48 + payload + trailer", expert.group.MALFORMED, expert.severity.ERROR)
local ef_res = ProtoExpert.new("dwcp.reserved_bits", "Reserved bits set", expert.group.MALFORMED, expert.severity.WARN)
local ef_crc = ProtoExpert.new("dwcp.bad_crc", "CRC32C mismatch", expert.group.CHECKSUM, expert.severity.ERROR)
dwcp.experts = { ef_magic, ef_len, ef_res, ef_crc }

-- CRC32C (Castagnoli, reflected 0x82F63B78), table-driven. Wireshark's Lua has bit32.
local band, bxor, rshift = bit32.band, bit32.bxor, bit32.rshift
local crc_table = {}
for i = 0, 255 do
  local c = i
  for _ = 1, 8 do
    if band(c, 1) ~= 0 then c = bxor(rshift(c, 1), 0x82F63B78) else c = rshift(c, 1) end
  end
  crc_table[i] = c
end
local function crc32c(bytes)
  local crc = 0xFFFFFFFF
  for i = 0, bytes:len() - 1 do
    crc = bxor(rshift(crc, 8), crc_table[band(bxor(crc, bytes:get_index(i)), 0xFF)])
  end
  return bxor(crc, 0xFFFFFFFF)
end

local function ranges(tree, tvb, off, n)
  for i = 0, n - 1 do
    local o = off + 16 * i
    if o + 16 > tvb:len() then return end
    local r = tree:add(tvb(o, 16), "Range " .. i)
    r:add(f.r_start, tvb(o, 8))
    r:add(f.r_end, tvb(o + 8, 8))
  end
end

-- Dissects one frame starting at `o`; returns its length, or nil when what is left is not a
-- whole frame (flagged as a length mismatch).
local function dissect_frame(tvb, o, tree)
  local rest = tvb:len() - o
  local t = tree:add(dwcp, tvb(o), "DWCP")
  if rest < 48 then
    t:add_proto_expert_info(ef_len)
    return nil
  end
  local magic = tvb(o, 2):uint()
  local mi = t:add(f.magic, tvb(o, 2))
  if magic ~= 0xDC57 then mi:add_proto_expert_info(ef_magic) end
  t:add(f.version, tvb(o + 2, 1))
  local ftype = tvb(o + 3, 1):uint()
  t:add(f.type, tvb(o + 3, 1))
  local flags = tvb(o + 4, 2):uint()
  local ft = t:add(f.flags, tvb(o + 4, 2))
  ft:add(f.flag_sealed, tvb(o + 4, 2))
  ft:add(f.flag_last, tvb(o + 4, 2))
  ft:add(f.flag_retx, tvb(o + 4, 2))
  ft:add(f.flag_reserved, tvb(o + 4, 2))
  if band(flags, 0xFFF8) ~= 0 then ft:add_proto_expert_info(ef_res) end
  t:add(f.stream, tvb(o + 6, 2))
  t:add(f.conn, tvb(o + 8, 4))
  local plen = tvb(o + 12, 4):uint()
  t:add(f.plen, tvb(o + 12, 4))
  t:add(f.seq, tvb(o + 16, 8))
  t:add(f.object, tvb(o + 24, 8))
  t:add(f.offset, tvb(o + 32, 8))
  t:add(f.codec, tvb(o + 40, 1))
  local r1 = t:add(f.reserved1, tvb(o + 41, 1))
  local r2 = t:add(f.reserved2, tvb(o + 42, 2))
  if tvb(o + 41, 1):uint() ~= 0 then r1:add_proto_expert_info(ef_res) end
  if tvb(o + 42, 2):uint() ~= 0 then r2:add_proto_expert_info(ef_res) end
  t:add(f.baseline, tvb(o + 44, 4))

  local sealed = band(flags, 1) ~= 0
  local trailer = sealed and 16 or 4
  local len = 48 + plen + trailer
  if magic ~= 0xDC57 or len > rest then
    t:add_proto_expert_info(ef_len)
    return nil
  end
  t:set_len(len)
  local p = o + 48
  if plen > 0 then
    local pt = t:add(f.payload, tvb(p, plen))
    if ftype == 0x01 or ftype == 0x02 then
      if plen >= 48 and not sealed then
        pt:add(f.h_versions, tvb(p, 2)); pt:add(f.h_caps, tvb(p + 2, 2))
        pt:add(f.h_streams, tvb(p + 4, 2)); pt:add(f.h_kxlen, tvb(p + 6, 2))
        pt:add(f.h_maxp, tvb(p + 8, 4)); pt:add(f.h_chunk, tvb(p + 12, 4))
        pt:add(f.h_nonce, tvb(p + 16, 32))
      end
    elseif (ftype == 0x11 and plen >= 32 or ftype == 0x12 and plen >= 8) and not sealed then
      pt:add(f.a_stream, tvb(p, 2))
      pt:add(f.a_count, tvb(p + 2, 2))
      local n = tvb(p + 2, 2):uint()
      if ftype == 0x11 then
        pt:add(f.a_delay, tvb(p + 4, 4)); pt:add(f.a_cum, tvb(p + 8, 8))
        pt:add(f.a_ts, tvb(p + 16, 8)); pt:add(f.a_rate, tvb(p + 24, 8))
        ranges(pt, tvb(p, plen):tvb(), 32, n)
      else
        ranges(pt, tvb(p, plen):tvb(), 8, n)
      end
    elseif (ftype == 0x20 and plen >= 16 or ftype == 0x21 and plen >= 24) and not sealed then
      pt:add(f.p_ts, tvb(p, 8)); pt:add(f.p_seq, tvb(p + 8, 8))
      if ftype == 0x21 then pt:add(f.p_len, tvb(p + 16, 4)); pt:add(f.p_delay, tvb(p + 20, 4)) end
    end
  end

  local tr = tvb(p + plen, trailer)
  if sealed then
    t:add(f.tag, tr)
  else
    local ci = t:add(f.crc, tr)
    local ok = crc32c(tvb(o, 48 + plen):bytes()) == tr:uint()
    ci:add(f.crc_ok, tr, ok)
    if not ok then ci:add_proto_expert_info(ef_crc) end
  end
  return len
end

-- One UDP datagram is one frame on the wire. A capture taken on the sending host with UDP GSO
-- (e.g. on loopback) shows the unsegmented super-datagram: consecutive frames, one per GSO
-- segment. Each is dissected as its own DWCP tree.
function dwcp.dissector(tvb, pinfo, tree)
  if tvb:len() < 48 then return 0 end
  pinfo.cols.protocol = "DWCP"
  local ftype = tvb(3, 1):uint()
  local name = frame_types[ftype] or string.format("0x%02x", ftype)
  local plen = tvb(12, 4):uint()
  local info = string.format("%s v%d stream=%d seq=%s", name, tvb(2, 1):uint(),
    tvb(6, 2):uint(), tostring(tvb(16, 8):uint64()))
  if ftype == 0x10 then
    info = info .. string.format(" obj=%s off=%s len=%d", tostring(tvb(24, 8):uint64()),
      tostring(tvb(32, 8):uint64()), plen)
  end
  local o, frames = 0, 0
  while o < tvb:len() do
    local n = dissect_frame(tvb, o, tree)
    frames = frames + 1
    if not n then break end
    o = o + n
  end
  if frames > 1 then info = info .. string.format(" (+%d more frames: GSO)", frames - 1) end
  pinfo.cols.info = info
  return tvb:len()
end

DissectorTable.get("udp.port"):add(7470, dwcp)
