-- A small stand-in for the Wireshark Lua API, enough to run emulator/wireshark/itpump.lua
-- outside Wireshark. It checks what Wireshark checks (field abbreviations, value types and
-- ranges, tvb bounds) and records the tree the dissector builds.

stub = { registered = {}, fields = {}, proto = nil }

base = { NONE = 0, DEC = 1, HEX = 2 }
expert = {
  group = { CHECKSUM = "checksum", MALFORMED = "malformed", RESPONSE_CODE = "response-code",
            REASSEMBLE = "reassemble" },
  severity = { NOTE = "note", WARN = "warn", ERROR = "error" },
}
wtap = { USER0 = 45 }

local LIMITS = { uint8 = 0xFF, uint16 = 0xFFFF, uint32 = 0xFFFFFFFF }

local function field_maker(kind)
  return function(abbr, name)
    assert(type(abbr) == "string" and abbr:match("^[%w_][%w%._-]*$"), "bad abbreviation")
    assert(type(name) == "string", "field name must be a string")
    if stub.fields[abbr] ~= nil then error("duplicate field " .. abbr) end
    local field = { abbr = abbr, name = name, kind = kind }
    stub.fields[abbr] = field
    return field
  end
end

ProtoField = {}
for _, kind in ipairs({ "uint8", "uint16", "uint32", "int32", "double", "bytes", "string",
                        "none" }) do
  ProtoField[kind] = field_maker(kind)
end

ProtoExpert = {
  new = function(abbr, text, group, severity)
    assert(group ~= nil and severity ~= nil, "expert needs a group and a severity")
    return { abbr = abbr, text = text, is_expert = true }
  end,
}

function Proto(name, description)
  local proto = { name = name, description = description, is_proto = true }
  stub.proto = proto
  return proto
end

DissectorTable = {
  get = function(table_name)
    return {
      add = function(_, key, proto)
        stub.registered[table_name .. ":" .. tostring(key)] = proto
      end,
    }
  end,
}

local Tvb, TvbRange = {}, {}
Tvb.__index, TvbRange.__index = Tvb, TvbRange

function Tvb.new(data, name) return setmetatable({ data = data, name = name }, Tvb) end
function Tvb:len() return #self.data end
function Tvb:raw(off, len)
  off = off or 0
  len = len or (#self.data - off)
  assert(off >= 0 and len >= 0 and off + len <= #self.data, "raw out of bounds")
  return self.data:sub(off + 1, off + len)
end
function Tvb:range(off, len)
  off = off or 0
  len = len or (#self.data - off)
  assert(off >= 0 and len >= 0 and off + len <= #self.data, "range out of bounds")
  return setmetatable({ tvb = self, off = off, length = len }, TvbRange)
end
function TvbRange:raw() return self.tvb.data:sub(self.off + 1, self.off + self.length) end
function TvbRange:len() return self.length end
function TvbRange:uint()
  assert(self.length >= 1 and self.length <= 4, "uint needs 1..4 bytes")
  local v = 0
  for i = 1, self.length do v = v * 256 + self:raw():byte(i) end
  return v
end
function TvbRange:float()
  assert(self.length == 4 or self.length == 8, "float needs 4 or 8 bytes")
  return be_double(self:raw())
end

ByteArray = {
  new = function(data, raw)
    assert(raw == true, "this stub only knows raw byte arrays")
    return { tvb = function(_, name) return Tvb.new(data, name) end }
  end,
}

local TreeItem = {}
TreeItem.__index = TreeItem

function stub.new_tree() return setmetatable({ children = {}, experts = {} }, TreeItem) end

local function check_value(field, value)
  local kind = field.kind
  if LIMITS[kind] ~= nil then
    assert(type(value) == "number" and value == math.floor(value), field.abbr .. ": integer")
    assert(value >= 0 and value <= LIMITS[kind], field.abbr .. ": value out of range")
  elseif kind == "int32" then
    assert(type(value) == "number" and value >= -2147483648 and value <= 2147483647,
           field.abbr .. ": int32")
  elseif kind == "double" then
    assert(type(value) == "number", field.abbr .. ": double")
  elseif kind == "string" then
    assert(type(value) == "string", field.abbr .. ": string value")
  else
    assert(value == nil, field.abbr .. ": " .. kind .. " fields take their value from the tvb")
  end
end

function TreeItem:add(field, range, value)
  assert(getmetatable(range) == TvbRange, "add needs a TvbRange")
  local item = setmetatable({ children = {}, experts = {}, range = range }, TreeItem)
  if field.is_proto then
    item.abbr = field.name
  else
    assert(stub.fields[field.abbr] == field, "field was not created with ProtoField")
    check_value(field, value)
    item.abbr = field.abbr
    item.value = value
    if value == nil and (field.kind == "bytes") then item.value = range:raw() end
  end
  self.children[#self.children + 1] = item
  return item
end
function TreeItem:set_text(text) self.text = text; return self end
function TreeItem:append_text(text) self.appended = (self.appended or "") .. text; return self end
function TreeItem:prepend_text(text) self.prepended = text .. (self.prepended or ""); return self end
function TreeItem:add_proto_expert_info(e, text)
  assert(e.is_expert, "add_proto_expert_info needs a ProtoExpert")
  self.experts[#self.experts + 1] = { abbr = e.abbr, text = text or e.text }
  return self
end

-- Depth-first list of every item: { depth, abbr, value, label, experts = "a,b" }.
function stub.flatten(tree)
  local out = {}
  local function walk(item, depth)
    for _, child in ipairs(item.children) do
      local experts = {}
      for _, e in ipairs(child.experts) do experts[#experts + 1] = e.abbr end
      out[#out + 1] = { depth = depth, abbr = child.abbr, value = child.value,
                        label = (child.prepended or "") .. (child.text or "")
                          .. (child.appended or ""),
                        experts = table.concat(experts, ",") }
      walk(child, depth + 1)
    end
  end
  walk(tree, 0)
  return out
end

function stub.new_pinfo() return { cols = {} } end
function stub.new_tvb(data) return Tvb.new(data, "packet") end
