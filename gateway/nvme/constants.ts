/**
 * Numbers of the NVMe/TCP transport (NVMe-oF TCP transport binding), NVMe over Fabrics and the
 * NVMe base and NVM command set specifications that the target uses. Facts, named once.
 */

// ---------------------------------------------------------------- TCP transport PDUs
export const PduType = {
  ICReq: 0x00,
  ICResp: 0x01,
  H2CTermReq: 0x02,
  C2HTermReq: 0x03,
  CapsuleCmd: 0x04,
  CapsuleResp: 0x05,
  H2CData: 0x06,
  C2HData: 0x07,
  R2T: 0x09,
} as const;

/** Common header FLAGS bits. */
export const PduFlag = {
  HDGSTF: 0x01,
  DDGSTF: 0x02,
  LAST_PDU: 0x04,
  /** C2HData only: the command completed successfully, no CapsuleResp follows. */
  SUCCESS: 0x08,
} as const;

/** Header lengths (HLEN) fixed by the transport for each PDU type. */
export const HLEN = {
  ICReq: 128,
  ICResp: 128,
  TermReq: 24,
  CapsuleCmd: 72,
  CapsuleResp: 24,
  H2CData: 24,
  C2HData: 24,
  R2T: 24,
} as const;

export const COMMON_HEADER = 8;
export const DIGEST_BYTES = 4;

/** Fatal Error Status of a TermReq. */
export const Fes = {
  InvalidHeaderField: 0x01,
  PduSequenceError: 0x02,
  HeaderDigestError: 0x03,
  DataOutOfRange: 0x04,
  DataLimitExceeded: 0x05,
  UnsupportedParameter: 0x06,
} as const;

// ---------------------------------------------------------------- commands
export const AdminOpcode = {
  DeleteIoSq: 0x00,
  CreateIoSq: 0x01,
  GetLogPage: 0x02,
  DeleteIoCq: 0x04,
  CreateIoCq: 0x05,
  Identify: 0x06,
  Abort: 0x08,
  SetFeatures: 0x09,
  GetFeatures: 0x0a,
  AsyncEventRequest: 0x0c,
  KeepAlive: 0x18,
  Fabrics: 0x7f,
} as const;

export const IoOpcode = {
  Flush: 0x00,
  Write: 0x01,
  Read: 0x02,
  WriteZeroes: 0x08,
  DatasetManagement: 0x09,
  Fabrics: 0x7f,
} as const;

export const FabricsType = {
  PropertySet: 0x00,
  Connect: 0x01,
  PropertyGet: 0x04,
  AuthSend: 0x05,
  AuthReceive: 0x06,
  Disconnect: 0x08,
} as const;

export const Cns = {
  Namespace: 0x00,
  Controller: 0x01,
  ActiveNamespaces: 0x02,
  NamespaceDescriptors: 0x03,
} as const;

export const LogPage = {
  Error: 0x01,
  Smart: 0x02,
  FirmwareSlot: 0x03,
  ChangedNamespaces: 0x04,
  Discovery: 0x70,
} as const;

export const Feature = {
  Arbitration: 0x01,
  PowerManagement: 0x02,
  TemperatureThreshold: 0x04,
  VolatileWriteCache: 0x06,
  NumberOfQueues: 0x07,
  InterruptCoalescing: 0x08,
  WriteAtomicity: 0x0a,
  AsyncEventConfig: 0x0b,
  KeepAliveTimer: 0x0f,
} as const;

/** Controller properties (the fabrics form of the PCIe registers). */
export const Property = {
  CAP: 0x00,
  VS: 0x08,
  CC: 0x14,
  CSTS: 0x1c,
  NSSR: 0x20,
} as const;

// ---------------------------------------------------------------- status
/** Status field of a completion: SCT in bits 10:8, SC in bits 7:0, DNR at bit 14 (before the phase shift). */
export interface Status {
  sct: number;
  sc: number;
  dnr?: boolean;
}

const generic = (sc: number, dnr = true): Status => ({ sct: 0, sc, dnr });
const specific = (sc: number, dnr = true): Status => ({ sct: 1, sc, dnr });

export const Sc = {
  Success: { sct: 0, sc: 0 } as Status,
  InvalidOpcode: generic(0x01),
  InvalidField: generic(0x02),
  CommandIdConflict: generic(0x03),
  DataTransferError: generic(0x04),
  InternalError: generic(0x06, false),
  AbortRequested: generic(0x07),
  InvalidNamespace: generic(0x0b),
  CommandSequenceError: generic(0x0c),
  InvalidSglDescriptor: generic(0x0d),
  SglLengthInvalid: generic(0x0f),
  SglTypeInvalid: generic(0x11),
  NamespaceWriteProtected: generic(0x20),
  TransientTransportError: generic(0x22, false),
  LbaOutOfRange: generic(0x80),
  CapacityExceeded: generic(0x81),
  // command specific
  InvalidQueueIdentifier: specific(0x01),
  AsyncEventLimitExceeded: specific(0x05),
  InvalidLogPage: specific(0x09),
  FeatureNotSaveable: specific(0x0d),
  ConnectIncompatibleFormat: specific(0x80),
  ConnectControllerBusy: specific(0x81),
  ConnectInvalidParameters: specific(0x82),
  ConnectInvalidHost: specific(0x84),
  // media errors
  UnrecoveredReadError: { sct: 2, sc: 0x81, dnr: true } as Status,
} as const;

export function statusField(s: Status): number {
  return ((s.dnr ? 1 : 0) << 14) | ((s.sct & 0x7) << 8) | (s.sc & 0xff);
}

// ---------------------------------------------------------------- SGL
/** SGL identifier byte (descriptor byte 15): type in the high nibble, subtype in the low. */
export const Sgl = {
  /** Data Block, Offset: the data is in the command capsule. */
  InCapsule: 0x01,
  /** Transport SGL Data Block, transport specific: data moves in H2CData/C2HData PDUs. */
  Transport: 0x5a,
} as const;

export const DISCOVERY_NQN = 'nqn.2014-08.org.nvmexpress.discovery';
/** Controller ids 0xFFF0..0xFFFF are reserved; 0xFFFF in Connect asks for a dynamic controller. */
export const MAX_CNTLID = 0xffef;
export const DYNAMIC_CNTLID = 0xffff;
