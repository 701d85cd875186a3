-- Wireshark dissector for itpump telemetry captures (`itpump serve --capture`).
--
-- Link type LINKTYPE_USER0 (147). Each packet: a 12-byte pseudo-header (version u8,
-- direction u8: 0 = programmer->pump, 1 = pump->programmer, header length u16, simulated
-- time in hours float64; big-endian), then the telemetry bytes as they crossed the link:
-- 0x7E-delimited frames, RFC 1662 byte stuffing, CRC-16/CCITT-FALSE, a 9-byte header,
-- the payload and an optional counter + MAC trailer. Specification: docs/protocol.md and
-- docs/capture.md. Install: copy this file into Wireshark's personal Lua plugins folder
-- (Help > About Wireshark > Folders), then reload Lua plugins (Ctrl+Shift+L).
--
-- Written for Lua 5.1 to 5.4 alike (Wireshark has shipped each): no bitwise operators, no
-- integer division, no string.unpack; bit arithmetic is done with plain numbers.
--
-- A frame is dissected when it lies whole in one packet (the emulator hands every read of
-- the link to the pump at once, so requests and answers normally do); bytes that belong to
-- a frame continued from or into another packet are labelled as such. `itpump decode`
-- reassembles across packets.

-- BEGIN GENERATED: tables (python -m emulator.lua_dissector --write)
local LINKTYPE = 147
local PSEUDO_HEADER_SIZE = 12
local MESSAGES = {
  [0x01] = { name = "IDENTIFY", request = "IdentifyRequest", response = "IdentifyResponse" },
  [0x02] = { name = "AUTH_BEGIN", request = "AuthBeginRequest", response = "AuthBeginResponse" },
  [0x03] = { name = "AUTH_PROOF", request = "AuthProofRequest", response = "AuthProofResponse" },
  [0x04] = { name = "END_SESSION", request = "EndSessionRequest", response = "Ack" },
  [0x10] = { name = "INTERROGATE", request = "InterrogateRequest", response = "InterrogateResponse" },
  [0x11] = { name = "READ_LOG", request = "ReadLogRequest", response = "ReadLogResponse" },
  [0x20] = { name = "SET_CLOCK", request = "SetClockRequest", response = "SetClockResponse" },
  [0x21] = { name = "SET_ALARM_THRESHOLDS", request = "SetAlarmThresholdsRequest", response = "Ack" },
  [0x22] = { name = "ACK_ALARM", request = "AckAlarmRequest", response = "AckAlarmResponse" },
  [0x30] = { name = "PROGRAM_BEGIN", request = "ProgramBeginRequest", response = "Ack" },
  [0x31] = { name = "PROGRAM_DATA", request = "ProgramDataRequest", response = "ProgramDataResponse" },
  [0x32] = { name = "PROGRAM_VERIFY", request = "ProgramVerifyRequest", response = "ProgramVerifyResponse" },
  [0x33] = { name = "PROGRAM_COMMIT", request = "ProgramCommitRequest", response = "Ack" },
  [0x34] = { name = "PROGRAM_ABORT", request = "ProgramAbortRequest", response = "Ack" },
  [0x40] = { name = "BOLUS", request = "BolusRequest", response = "BolusResponse" },
  [0x41] = { name = "STOP_THERAPY", request = "StopTherapyRequest", response = "Ack" },
  [0x42] = { name = "RESUME_THERAPY", request = "ResumeTherapyRequest", response = "Ack" },
  [0x50] = { name = "REFILL", request = "RefillRequest", response = "RefillResponse" },
  [0x51] = { name = "CATHETER_REVISION", request = "CatheterRevisionRequest", response = "CatheterRevisionResponse" },
  [0x52] = { name = "MRI_VALVE_RESET", request = "MriValveResetRequest", response = "Ack" },
  [0x53] = { name = "ALARM_TEST", request = "AlarmTestRequest", response = "Ack" },
}
local STRUCTS = {
  IdentifyRequest = {
    { "versions", { k = "list", item = { k = "u", n = 1 } } },
  },
  IdentifyResponse = {
    { "selected_version", { k = "u", n = 1 } },
    { "capabilities", { k = "flags", e = "Capability" } },
    { "auth_required", { k = "bool" } },
    { "max_body_bytes", { k = "u", n = 2 } },
    { "max_flex_steps", { k = "u", n = 1 } },
    { "versions", { k = "list", item = { k = "u", n = 1 } } },
    { "serial", { k = "str" } },
    { "model", { k = "str" } },
    { "firmware_version", { k = "str" } },
  },
  AuthBeginRequest = {
    { "role", { k = "enum", e = "Role" } },
    { "programmer_nonce", { k = "bytes", n = 16 } },
  },
  AuthBeginResponse = {
    { "session_id", { k = "u", n = 4 } },
    { "pump_nonce", { k = "bytes", n = 16 } },
  },
  AuthProofRequest = {
    { "proof", { k = "bytes", n = 32 } },
  },
  AuthProofResponse = {
    { "pump_proof", { k = "bytes", n = 32 } },
    { "idle_timeout_s", { k = "u", n = 2 } },
  },
  EndSessionRequest = {
  },
  Ack = {
  },
  InterrogateRequest = {
  },
  InterrogateResponse = {
    { "time_s", { k = "u", n = 4 } },
    { "therapy_state", { k = "enum", e = "TherapyState" } },
    { "reservoir_volume_nl", { k = "u", n = 4 } },
    { "reservoir_capacity_nl", { k = "u", n = 4 } },
    { "low_reservoir_threshold_nl", { k = "u", n = 4 } },
    { "rate_nl_per_day", { k = "u", n = 4 } },
    { "dose_24h_ng", { k = "u", n = 4 } },
    { "patient_boluses_24h", { k = "u", n = 1 } },
    { "battery_per_mille", { k = "u", n = 2 } },
    { "battery_eri", { k = "bool" } },
    { "battery_eos", { k = "bool" } },
    { "projected_low_reservoir_s", { k = "u", n = 4, none = 0 } },
    { "projected_eri_s", { k = "u", n = 4, none = 0 } },
    { "program", { k = "struct", s = "TherapyProgram" } },
    { "alarms", { k = "list", item = { k = "struct", s = "Alarm" } } },
    { "projected_empty_s", { k = "u", n = 4, none = 0 } },
    { "unprimed_nl", { k = "u", n = 4 } },
    { "clock_valid", { k = "bool" } },
  },
  TherapyProgram = {
    { "max_daily_dose_ng", { k = "u", n = 4 } },
    { "concentration_ng_per_ml", { k = "u", n = 4 } },
    { "catheter_length_mm", { k = "u", n = 2 } },
    { "catheter_volume_nl_per_cm", { k = "u", n = 2 } },
    { "patient_bolus", { k = "opt", s = "PatientBolusSettings" } },
    { "mode", { k = "union", m = { [0] = "StoppedMode", [1] = "ContinuousMode", [2] = "FlexMode", [3] = "PeriodicBolusMode" } } },
    { "drug_name", { k = "str" } },
    { "patient_id", { k = "str" } },
  },
  PatientBolusSettings = {
    { "dose_ng", { k = "u", n = 4 } },
    { "duration_min", { k = "u", n = 2 } },
    { "lockout_min", { k = "u", n = 2 } },
    { "max_per_day", { k = "u", n = 1 } },
  },
  StoppedMode = {
  },
  ContinuousMode = {
    { "dose_ng_per_day", { k = "u", n = 4 } },
  },
  FlexMode = {
    { "period", { k = "enum", e = "FlexPeriod" } },
    { "steps", { k = "list", item = { k = "struct", s = "FlexStep" } } },
  },
  FlexStep = {
    { "start_min", { k = "u", n = 2 } },
    { "dose_ng_per_day", { k = "u", n = 4 } },
  },
  PeriodicBolusMode = {
    { "basal_dose_ng_per_day", { k = "u", n = 4 } },
    { "bolus_dose_ng", { k = "u", n = 4 } },
    { "bolus_duration_min", { k = "u", n = 2 } },
    { "interval_min", { k = "u", n = 2 } },
    { "first_offset_min", { k = "u", n = 2 } },
  },
  Alarm = {
    { "alarm_id", { k = "u", n = 1 } },
    { "severity", { k = "enum", e = "AlarmSeverity" } },
    { "raised_at_s", { k = "u", n = 4 } },
    { "acknowledged", { k = "bool" } },
  },
  ReadLogRequest = {
    { "page", { k = "u", n = 2 } },
  },
  ReadLogResponse = {
    { "page", { k = "u", n = 2 } },
    { "total_pages", { k = "u", n = 2 } },
    { "total_entries", { k = "u", n = 4 } },
    { "entries", { k = "list", item = { k = "struct", s = "LogEntry" } } },
  },
  LogEntry = {
    { "index", { k = "u", n = 4 } },
    { "time_s", { k = "u", n = 4 } },
    { "event_code", { k = "u", n = 2 } },
    { "args_milli", { k = "list", item = { k = "i", n = 8 } } },
  },
  SetClockRequest = {
    { "time_s", { k = "u", n = 4 } },
  },
  SetClockResponse = {
    { "previous_time_s", { k = "u", n = 4 } },
  },
  SetAlarmThresholdsRequest = {
    { "low_reservoir_nl", { k = "u", n = 4 } },
  },
  AckAlarmRequest = {
    { "alarm_id", { k = "u", n = 1, none = 255 } },
  },
  AckAlarmResponse = {
    { "acknowledged", { k = "u", n = 1 } },
  },
  ProgramBeginRequest = {
    { "length_bytes", { k = "u", n = 2 } },
    { "digest", { k = "bytes", n = 32 } },
  },
  ProgramDataRequest = {
    { "offset", { k = "u", n = 2 } },
    { "chunk", { k = "tail" } },
  },
  ProgramDataResponse = {
    { "received_bytes", { k = "u", n = 2 } },
  },
  ProgramVerifyRequest = {
  },
  ProgramVerifyResponse = {
    { "length_bytes", { k = "u", n = 2 } },
    { "digest", { k = "bytes", n = 32 } },
    { "program", { k = "struct", s = "TherapyProgram" } },
  },
  ProgramCommitRequest = {
    { "digest", { k = "bytes", n = 32 } },
  },
  ProgramAbortRequest = {
  },
  BolusRequest = {
    { "bolus", { k = "union", m = { [1] = "ClinicianBolus", [2] = "PrimingBolus", [3] = "BridgeBolus", [4] = "PatientBolus", [5] = "CancelBolus" } } },
  },
  ClinicianBolus = {
    { "dose_ng", { k = "u", n = 4 } },
    { "duration_min", { k = "u", n = 2 } },
    { "then_resume", { k = "bool" } },
  },
  PrimingBolus = {
    { "volume_nl", { k = "u", n = 4, none = 0 } },
  },
  BridgeBolus = {
    { "volume_nl", { k = "u", n = 4, none = 0 } },
    { "old_concentration_ng_per_ml", { k = "u", n = 4, none = 0 } },
  },
  PatientBolus = {
  },
  CancelBolus = {
  },
  BolusResponse = {
    { "dose_ng", { k = "u", n = 4 } },
    { "volume_nl", { k = "u", n = 4 } },
    { "cancelled", { k = "u", n = 1 } },
  },
  StopTherapyRequest = {
  },
  ResumeTherapyRequest = {
  },
  RefillRequest = {
    { "volume_nl", { k = "u", n = 4 } },
    { "concentration_ng_per_ml", { k = "u", n = 4 } },
    { "aspirated_nl", { k = "u", n = 4, none = 4294967295 } },
    { "bridge_bolus", { k = "bool" } },
    { "drug_name", { k = "str" } },
  },
  RefillResponse = {
    { "reservoir_volume_nl", { k = "u", n = 4 } },
    { "bridge_volume_nl", { k = "u", n = 4 } },
    { "projected_low_reservoir_s", { k = "u", n = 4, none = 0 } },
  },
  CatheterRevisionRequest = {
    { "catheter_length_mm", { k = "u", n = 2 } },
    { "catheter_volume_nl_per_cm", { k = "u", n = 2 } },
  },
  CatheterRevisionResponse = {
    { "unprimed_nl", { k = "u", n = 4 } },
  },
  MriValveResetRequest = {
  },
  AlarmTestRequest = {
  },
}
local ENUMS = {
  AlarmSeverity = { [1] = "NON_CRITICAL", [2] = "CRITICAL" },
  FlexPeriod = { [1] = "DAILY", [2] = "WEEKLY" },
  ResultCode = { [0] = "OK", [1] = "MALFORMED", [2] = "UNKNOWN_MESSAGE", [3] = "UNSUPPORTED_VERSION", [4] = "NOT_AUTHENTICATED", [5] = "AUTH_FAILED", [6] = "BAD_MAC", [7] = "REPLAYED", [8] = "ROLE_FORBIDDEN", [9] = "SEQUENCE_ERROR", [10] = "SESSION_BUSY", [11] = "AUTH_BACKOFF", [12] = "CHALLENGE_REPLACED", [31] = "INTERNAL_ERROR", [32] = "OUT_OF_RANGE", [33] = "RATE_OUT_OF_RANGE", [34] = "DAILY_DOSE_EXCEEDED", [35] = "RESERVOIR_CAPACITY_EXCEEDED", [36] = "LOCKOUT_ACTIVE", [37] = "PATIENT_BOLUS_DAILY_MAX", [38] = "TOO_MANY_STEPS", [39] = "NO_PENDING_PROGRAM", [40] = "PROGRAM_VERIFY_FAILED", [41] = "INVALID_STATE", [42] = "THERAPY_DISABLED", [43] = "NOT_PRIMED", [44] = "LOG_PAGE_OUT_OF_RANGE", [45] = "NOT_SUPPORTED", [46] = "PROGRAM_CHUNK_OUT_OF_ORDER" },
  Role = { [1] = "CLINICIAN", [2] = "PATIENT" },
  TherapyState = { [1] = "RUNNING", [2] = "STOPPED", [3] = "BOLUS", [4] = "PRIMING", [5] = "BRIDGING", [6] = "MINIMUM_RATE", [7] = "DISABLED" },
}
local FLAGS = {
  Capability = { { 1, "FLEX" }, { 2, "PERIODIC_BOLUS" }, { 4, "PATIENT_BOLUS" }, { 8, "BRIDGE_BOLUS" }, { 16, "PRIMING_BOLUS" }, { 32, "CLINICIAN_BOLUS" } },
}
-- END GENERATED: tables

local FLAG, ESCAPE = 0x7E, 0x7D
local HEADER_SIZE, TRAILER_SIZE, MAC_SIZE = 9, 12, 8
local DIRECTIONS = { [0] = "programmer->pump", [1] = "pump->programmer" }

-- --- pure helpers (no Wireshark API) ----------------------------------------------------

local function bxor16(a, b)
  local result, bit = 0, 1
  for _ = 1, 16 do
    if (a % 2) ~= (b % 2) then result = result + bit end
    a, b, bit = math.floor(a / 2), math.floor(b / 2), bit * 2
  end
  return result
end

-- CRC-16/CCITT-FALSE (poly 0x1021, init 0xFFFF): 0x29B1 over "123456789".
local function crc16(s)
  local crc = 0xFFFF
  for i = 1, #s do
    crc = bxor16(crc, s:byte(i) * 256)
    for _ = 1, 8 do
      if crc >= 0x8000 then
        crc = bxor16((crc * 2) % 0x10000, 0x1021)
      else
        crc = (crc * 2) % 0x10000
      end
    end
  end
  return crc
end

-- Undo the byte stuffing; nil and a reason when the frame ends in a lone escape (abort).
local function unstuff(s)
  local out, i = {}, 1
  while i <= #s do
    local b = s:byte(i)
    if b == ESCAPE then
      if i == #s then return nil, "aborted frame (ends with an escape byte)" end
      local n = s:byte(i + 1)
      -- XOR 0x20 without bit operators: flip the 0x20 bit.
      if math.floor(n / 0x20) % 2 == 1 then n = n - 0x20 else n = n + 0x20 end
      out[#out + 1] = string.char(n)
      i = i + 2
    else
      out[#out + 1] = string.char(b)
      i = i + 1
    end
  end
  return table.concat(out)
end

local function uint(s, off, n)
  local v = 0
  for i = off + 1, off + n do v = v * 256 + s:byte(i) end
  return v
end

-- Two's complement via the complement's magnitude: exact for 8-byte values in every Lua
-- (a double cannot hold 2^64 - small, but holds the small complement).
local function int(s, off, n)
  if s:byte(off + 1) < 0x80 then return uint(s, off, n) end
  local v = 0
  for i = off + 1, off + n do v = v * 256 + (255 - s:byte(i)) end
  return -v - 1
end

local function hex(s)
  return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end))
end

local function flag_names(table_, v)
  local names = {}
  for _, member in ipairs(table_) do
    if math.floor(v / member[1]) % 2 == 1 then names[#names + 1] = member[2] end
  end
  return table.concat(names, "|")
end

-- Decode a record at `off` of body string `s`, into a list of nodes
-- { name, off, len, kind, value, text, children }. Raises an error string when the
-- payload is too short or a value is not one the protocol allows.
local decode_struct

local function need(s, off, n, name)
  if off + n > #s then error("payload too short for " .. name, 0) end
end

local function decode_value(s, off, name, d)
  local k = d.k
  if k == "u" or k == "i" then
    need(s, off, d.n, name)
    local v = (k == "u") and uint(s, off, d.n) or int(s, off, d.n)
    local text = tostring(v)
    if d.none ~= nil and v == d.none then text = text .. " (none)" end
    return { name = name, off = off, len = d.n, kind = k, size = d.n, value = v, text = text }
  elseif k == "bool" then
    need(s, off, 1, name)
    local v = s:byte(off + 1)
    if v > 1 then error(name .. ": boolean byte " .. v .. " is neither 0 nor 1", 0) end
    return { name = name, off = off, len = 1, kind = "u", size = 1, value = v,
             text = (v == 1) and "true" or "false" }
  elseif k == "enum" then
    need(s, off, 1, name)
    local v = s:byte(off + 1)
    local label = ENUMS[d.e][v]
    if label == nil then error(name .. ": " .. v .. " is not a " .. d.e .. " value", 0) end
    return { name = name, off = off, len = 1, kind = "u", size = 1, value = v, text = label }
  elseif k == "flags" then
    need(s, off, 4, name)
    local v = uint(s, off, 4)
    return { name = name, off = off, len = 4, kind = "u", size = 4, value = v,
             text = flag_names(FLAGS[d.e], v) }
  elseif k == "bytes" then
    need(s, off, d.n, name)
    local raw = s:sub(off + 1, off + d.n)
    return { name = name, off = off, len = d.n, kind = "bytes", value = raw, text = hex(raw) }
  elseif k == "tail" then
    local raw = s:sub(off + 1)
    return { name = name, off = off, len = #raw, kind = "bytes", value = raw, text = hex(raw) }
  elseif k == "str" then
    need(s, off, 1, name)
    local n = s:byte(off + 1)
    need(s, off + 1, n, name)
    local v = s:sub(off + 2, off + 1 + n)
    return { name = name, off = off, len = n + 1, kind = "str", value = v, text = v }
  elseif k == "list" then
    need(s, off, 1, name)
    local count = s:byte(off + 1)
    local node = { name = name, off = off, kind = "record", children = {},
                   text = count .. " items" }
    local pos = off + 1
    for i = 1, count do
      local item = decode_value(s, pos, name .. "[" .. (i - 1) .. "]", d.item)
      node.children[#node.children + 1] = item
      pos = item.off + item.len
    end
    node.len = pos - off
    return node
  elseif k == "struct" then
    return decode_struct(s, off, name, d.s)
  elseif k == "opt" then
    need(s, off, 1, name)
    local present = s:byte(off + 1)
    if present == 0 then
      return { name = name, off = off, len = 1, kind = "record", children = {}, text = "absent" }
    elseif present ~= 1 then
      error(name .. ": presence byte " .. present .. " is neither 0 nor 1", 0)
    end
    local node = decode_struct(s, off + 1, name, d.s)
    node.off, node.len = off, node.len + 1
    return node
  elseif k == "union" then
    need(s, off, 1, name)
    local tag = s:byte(off + 1)
    local member = d.m[tag]
    if member == nil then error(name .. ": unknown tag " .. tag, 0) end
    local node = decode_struct(s, off + 1, name, member)
    node.off, node.len = off, node.len + 1
    return node
  end
  error("unknown field kind " .. tostring(k), 0)
end

decode_struct = function(s, off, name, struct_name)
  local node = { name = name, off = off, kind = "record", children = {}, text = struct_name,
                 record = struct_name }
  local pos = off
  for _, field in ipairs(STRUCTS[struct_name]) do
    local child = decode_value(s, pos, field[1], field[2])
    node.children[#node.children + 1] = child
    pos = child.off + child.len
  end
  node.len = pos - off
  return node
end

-- Split one frame body into header, trailer and the decoded message. Returns a table:
-- { header = {...}, name, payload_off, payload_len, counter, mac, message = node|nil,
--   result, detail, error }.
local function decode_body(body)
  local f = {}
  if #body < HEADER_SIZE then
    f.error = "body of " .. #body .. " bytes is shorter than the 9-byte header"
    return f
  end
  f.version, f.msg_type, f.flags = body:byte(1), body:byte(2), body:byte(3)
  f.seq, f.session_id = uint(body, 3, 2), uint(body, 5, 4)
  f.is_response = f.msg_type >= 0x80
  local code = f.msg_type % 0x80
  local info = MESSAGES[code]
  f.name = (info and info.name or string.format("type 0x%02X", code))
    .. (f.is_response and " response" or " request")
  local has_mac = f.flags % 2 == 1
  local payload_end = #body
  if has_mac then
    if #body < HEADER_SIZE + TRAILER_SIZE then
      f.error = "body too short for its MAC trailer"
      return f
    end
    payload_end = #body - TRAILER_SIZE
    f.counter = uint(body, payload_end, 4)
    f.mac = body:sub(payload_end + 5, payload_end + 4 + MAC_SIZE)
    f.mac_off = payload_end + 4
  end
  f.payload_off, f.payload_len = HEADER_SIZE, payload_end - HEADER_SIZE
  if info == nil then
    f.error = "unknown message type"
    return f
  end
  local payload = body:sub(1, payload_end)
  local ok, err = pcall(function()
    local off = HEADER_SIZE
    if f.is_response then
      need(payload, off, 2, "result")
      f.result = payload:byte(off + 1)
      f.result_name = ENUMS.ResultCode[f.result] or ("0x" .. string.format("%02X", f.result))
      local n = payload:byte(off + 2)
      need(payload, off + 2, n, "detail")
      f.detail = payload:sub(off + 3, off + 2 + n)
      f.detail_off, f.detail_len = off + 1, n + 1
      off = off + 2 + n
      if f.result ~= 0 then
        if off ~= #payload then error("trailing bytes after the refusal", 0) end
        return
      end
      f.message = decode_struct(payload, off, info.response, info.response)
    else
      f.message = decode_struct(payload, off, info.request, info.request)
    end
    local stop = f.message.off + f.message.len
    if stop ~= #payload then error((#payload - stop) .. " unexpected trailing bytes", 0) end
  end)
  if not ok then f.error = "malformed: " .. tostring(err) end
  return f
end

-- Split a packet's telemetry bytes at the flags. Returns a list of pieces
-- { kind = "frame" | "outside" | "partial", off, len, stuffed } (offsets into `data`).
local function split_frames(data)
  local pieces, flags = {}, {}
  for i = 1, #data do
    if data:byte(i) == FLAG then flags[#flags + 1] = i - 1 end
  end
  if #flags == 0 then
    if #data > 0 then pieces[1] = { kind = "partial", off = 0, len = #data } end
    return pieces
  end
  if flags[1] > 0 then pieces[#pieces + 1] = { kind = "outside", off = 0, len = flags[1] } end
  for j = 1, #flags - 1 do
    local a, b = flags[j], flags[j + 1]
    if b > a + 1 then
      pieces[#pieces + 1] = { kind = "frame", off = a, len = b - a + 1,
                              stuffed = data:sub(a + 2, b) }
    end
  end
  local last = flags[#flags]
  if last < #data - 1 then
    pieces[#pieces + 1] = { kind = "partial", off = last, len = #data - last }
  end
  return pieces
end

-- --- Wireshark glue -------------------------------------------------------------------------

local proto = Proto("itpump", "itpump telemetry")

local pf = {
  direction = ProtoField.uint8("itpump.direction", "Direction", base.DEC, DIRECTIONS),
  sim_time_h = ProtoField.double("itpump.sim_time_h", "Simulated time (h)"),
  frame = ProtoField.bytes("itpump.frame", "Frame"),
  crc = ProtoField.uint16("itpump.crc", "CRC", base.HEX),
  crc_status = ProtoField.string("itpump.crc_status", "CRC status"),
  version = ProtoField.uint8("itpump.version", "Version"),
  msg_type = ProtoField.uint8("itpump.msg_type", "Message type", base.HEX),
  flags = ProtoField.uint8("itpump.flags", "Flags", base.HEX),
  seq = ProtoField.uint16("itpump.seq", "Sequence number"),
  session_id = ProtoField.uint32("itpump.session_id", "Session id", base.HEX),
  message = ProtoField.string("itpump.message", "Message"),
  result = ProtoField.uint8("itpump.result", "Result", base.HEX),
  detail = ProtoField.string("itpump.detail", "Detail"),
  counter = ProtoField.uint32("itpump.counter", "Counter"),
  mac = ProtoField.bytes("itpump.mac", "MAC"),
  record = ProtoField.none("itpump.record", "Record"),
  outside = ProtoField.bytes("itpump.outside", "Bytes outside a frame"),
}

-- One ProtoField per message field name ("itpump.msg.reservoir_volume_nl" ...), so display
-- filters work on any field; "msg." keeps them apart from the header's fields. Names reused with another kind get the kind as a suffix.
local FIELD_KIND = { u = "uint", i = "int", bytes = "bytes", str = "string" }
local message_fields = {}

local function field_for(name, kind)
  local key = name .. "/" .. kind
  if message_fields[key] == nil then
    local abbr = "itpump.msg." .. name
    for other, _ in pairs(message_fields) do
      if other:match("^(.-)/") == name then abbr = abbr .. "_" .. kind end
    end
    local field
    if kind == "uint" then
      field = ProtoField.uint32(abbr, name)
    elseif kind == "int" then
      field = ProtoField.int32(abbr, name)
    elseif kind == "bytes" then
      field = ProtoField.bytes(abbr, name)
    else
      field = ProtoField.string(abbr, name)
    end
    message_fields[key] = field
  end
  return message_fields[key]
end

local function leaf_kind(d)
  local k = d.k
  if k == "u" or k == "bool" or k == "enum" or k == "flags" then
    -- 8-byte integers exceed a uint32 field: show them as text.
    if d.n ~= nil and d.n > 4 then return "string" end
    return "uint"
  elseif k == "i" then
    if d.n > 4 then return "string" end
    return "int"
  elseif k == "bytes" or k == "tail" then
    return "bytes"
  elseif k == "str" then
    return "string"
  end
  return nil
end

local function register_fields(d, name)
  local kind = leaf_kind(d)
  if kind ~= nil then
    field_for(name, kind)
  elseif d.k == "list" then
    register_fields(d.item, name)
  end
end

for _, fields in pairs(STRUCTS) do
  for _, field in ipairs(fields) do register_fields(field[2], field[1]) end
end

local all_fields = {}
for _, field in pairs(pf) do all_fields[#all_fields + 1] = field end
for _, field in pairs(message_fields) do all_fields[#all_fields + 1] = field end
proto.fields = all_fields

local ex = {
  bad_crc = ProtoExpert.new("itpump.bad_crc", "Bad CRC: the pump drops this frame",
                            expert.group.CHECKSUM, expert.severity.ERROR),
  malformed = ProtoExpert.new("itpump.malformed", "Malformed frame",
                              expert.group.MALFORMED, expert.severity.ERROR),
  refused = ProtoExpert.new("itpump.refused", "Request refused",
                            expert.group.RESPONSE_CODE, expert.severity.NOTE),
  partial = ProtoExpert.new("itpump.partial", "Frame continues in another packet",
                            expert.group.REASSEMBLE, expert.severity.NOTE),
}
proto.experts = { ex.bad_crc, ex.malformed, ex.refused, ex.partial }

local function base_name(name)
  return (name:gsub("%[%d+%]$", ""))
end

local function add_node(tree, tvb, node)
  if node.kind == "record" then
    local item = tree:add(pf.record, tvb:range(node.off, node.len))
    item:set_text(node.name .. ": " .. node.text)
    for _, child in ipairs(node.children) do add_node(item, tvb, child) end
    return
  end
  local name = base_name(node.name)
  local kind = FIELD_KIND[node.kind]
  if (node.kind == "u" or node.kind == "i") and node.size ~= nil and node.size > 4 then
    kind = "string"
  end
  local field = field_for(name, kind)
  local item
  if kind == "bytes" then
    if node.len == 0 then
      item = tree:add(field, tvb:range(node.off, 0))
    else
      item = tree:add(field, tvb:range(node.off, node.len))
    end
  elseif kind == "string" then
    item = tree:add(field, tvb:range(node.off, node.len), node.text)
  else
    item = tree:add(field, tvb:range(node.off, node.len), node.value)
    if node.text ~= tostring(node.value) then item:append_text(" (" .. node.text .. ")") end
  end
  if name ~= node.name then item:prepend_text(node.name .. " ") end
end

local function dissect_frame(tree, tvb, piece, info_parts)
  local frame_tree = tree:add(pf.frame, tvb:range(piece.off, piece.len))
  local content, reason = unstuff(piece.stuffed)
  if content == nil then
    frame_tree:set_text("Frame: " .. reason)
    frame_tree:add_proto_expert_info(ex.malformed, reason)
    info_parts[#info_parts + 1] = "[aborted frame]"
    return
  end
  if #content < 3 then
    frame_tree:set_text("Frame: truncated (" .. #content .. " bytes)")
    frame_tree:add_proto_expert_info(ex.malformed, "truncated frame")
    info_parts[#info_parts + 1] = "[truncated frame]"
    return
  end
  local body = content:sub(1, #content - 2)
  local wire_crc = uint(content, #content - 2, 2)
  local good = crc16(content) == 0
  local ftvb = ByteArray.new(content, true):tvb("Unstuffed frame")
  local crc_item = frame_tree:add(pf.crc, ftvb:range(#content - 2, 2), wire_crc)
  frame_tree:add(pf.crc_status, ftvb:range(#content - 2, 2), good and "good" or "bad")
  if not good then
    crc_item:append_text(string.format(" [bad: computed 0x%04X]", crc16(body)))
    crc_item:add_proto_expert_info(ex.bad_crc)
    frame_tree:set_text("Frame: bad CRC")
    info_parts[#info_parts + 1] = "[bad CRC]"
    return
  end
  local f = decode_body(body)
  if f.version == nil then
    frame_tree:set_text("Frame: " .. f.error)
    frame_tree:add_proto_expert_info(ex.malformed, f.error)
    info_parts[#info_parts + 1] = "[malformed]"
    return
  end
  frame_tree:set_text("Frame: " .. f.name)
  local header = frame_tree:add(pf.record, ftvb:range(0, HEADER_SIZE))
  header:set_text("Header")
  header:add(pf.version, ftvb:range(0, 1), f.version)
  local type_item = header:add(pf.msg_type, ftvb:range(1, 1), f.msg_type)
  type_item:append_text(" (" .. f.name .. ")")
  header:add(pf.flags, ftvb:range(2, 1), f.flags)
  header:add(pf.seq, ftvb:range(3, 2), f.seq)
  header:add(pf.session_id, ftvb:range(5, 4), f.session_id)
  frame_tree:add(pf.message, ftvb:range(1, 1), f.name)
  local text = f.name .. " seq=" .. f.seq
  if f.result ~= nil then
    frame_tree:add(pf.result, ftvb:range(HEADER_SIZE, 1), f.result)
      :append_text(" (" .. f.result_name .. ")")
    if f.detail_len > 1 then
      frame_tree:add(pf.detail, ftvb:range(f.detail_off, f.detail_len), f.detail)
    end
    if f.result ~= 0 then
      frame_tree:add_proto_expert_info(ex.refused, f.result_name .. ": " .. f.detail)
      text = text .. " refused " .. f.result_name
    end
  end
  if f.message ~= nil then add_node(frame_tree, ftvb, f.message) end
  if f.error ~= nil then
    frame_tree:add_proto_expert_info(ex.malformed, f.error)
    text = text .. " [" .. f.error .. "]"
  end
  if f.counter ~= nil then
    frame_tree:add(pf.counter, ftvb:range(f.mac_off - 4, 4), f.counter)
    frame_tree:add(pf.mac, ftvb:range(f.mac_off, MAC_SIZE))
  end
  info_parts[#info_parts + 1] = text
end

function proto.dissector(tvb, pinfo, tree)
  local length = tvb:len()
  if length < PSEUDO_HEADER_SIZE then return 0 end
  local header_len = tvb:range(2, 2):uint()
  if header_len < PSEUDO_HEADER_SIZE or header_len > length then return 0 end
  pinfo.cols.protocol = "ITPUMP"
  local direction = tvb:range(1, 1):uint()
  local root = tree:add(proto, tvb:range(0, length))
  root:add(pf.direction, tvb:range(1, 1), direction)
  root:add(pf.sim_time_h, tvb:range(4, 8), tvb:range(4, 8):float())
  local info_parts = { DIRECTIONS[direction] or "?" }
  local data = tvb:raw(header_len, length - header_len)
  for _, piece in ipairs(split_frames(data)) do
    piece.off = piece.off + header_len
    if piece.kind == "frame" then
      dissect_frame(root, tvb, piece, info_parts)
    else
      local item = root:add(pf.outside, tvb:range(piece.off, piece.len))
      if piece.kind == "partial" then
        item:add_proto_expert_info(ex.partial)
        info_parts[#info_parts + 1] = "[frame fragment]"
      end
    end
  end
  pinfo.cols.info = table.concat(info_parts, " ")
  return length
end

DissectorTable.get("wtap_encap"):add(wtap.USER0, proto)

-- For tests and other Lua code: the pure decoding functions.
return { crc16 = crc16, unstuff = unstuff, decode_body = decode_body,
         split_frames = split_frames, proto = proto, linktype = LINKTYPE }
