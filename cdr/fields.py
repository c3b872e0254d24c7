# ruff: noqa: E501
"""The CUCM CDR and CMR field catalogue (CUCM 10.5 – 15).

Names and types are those of the real header lines (line 1 and line 2 of a file); the order
is the order of the newest generation. Older generations are prefixes of it: CDR 118 → 129 →
133 fields, CMR 19 → 44 → 48. Descriptions summarise Cisco's CDR guide.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class FieldSpec:
    name: str
    type: str
    generation: str
    description: str

    @property
    def is_integer(self) -> bool:
        return self.type == "INTEGER"


def _fields(rows: tuple[tuple[str, str, str, str], ...]) -> tuple[FieldSpec, ...]:
    return tuple(FieldSpec(*row) for row in rows)


# (name, type, generation, description)
CDR_FIELDS = _fields(
    (
        ("cdrRecordType", "INTEGER", "A", "1 = CDR (0 = start record, never used; 2 = CMR)"),
        ("globalCallID_callManagerId", "INTEGER", "A", "node (CallManager) that allocated the GlobalCallID"),
        ("globalCallID_callId", "INTEGER", "A", "per-node sequential call id, 24-bit, wraps to 1"),
        ("origLegCallIdentifier", "INTEGER", "A", "calling leg id, cluster-unique, survives transfer sub-calls"),
        ("dateTimeOrigination", "INTEGER", "A", "UTC epoch s: off-hook / SETUP received; always set"),
        ("origNodeId", "INTEGER", "A", "node where originator was registered"),
        ("origSpan", "INTEGER", "A", "B-channel for PRI/T1/BRI; for H.323 (observed also SIP trunks) = leg id; else 0"),
        ("origIpAddr", "INTEGER", "A", "IPv4 as signed int32, little-endian byte order; 0 if none"),
        ("callingPartyNumber", "VARCHAR(50)", "A", "digits or SIP URI; may be empty for server-originated calls"),
        ("callingPartyUnicodeLoginUserID", "VARCHAR(128)", "A", "UTF-8 user id"),
        ("origCause_location", "INTEGER", "A", "Q.850 location 0-15"),
        ("origCause_value", "INTEGER", "A", "cause when the ORIGINATOR cleared; 0 otherwise; 393216 = split"),
        ("origPrecedenceLevel", "INTEGER", "A", "MLPP 0-4, default 4"),
        ("origMediaTransportAddress_IP", "INTEGER", "A", "media IPv4 (same encoding as origIpAddr)"),
        ("origMediaTransportAddress_Port", "INTEGER", "A", ""),
        ("origMediaCap_payloadCapability", "INTEGER", "A", "codec code (see codec table)"),
        ("origMediaCap_maxFramesPerPacket", "INTEGER", "A", "ms per packet (10/20/30)"),
        ("origMediaCap_g723BitRate", "INTEGER", "A", "unused, 0"),
        ("origVideoCap_Codec", "INTEGER", "A", ""),
        ("origVideoCap_Bandwidth", "INTEGER", "A", ""),
        ("origVideoCap_Resolution", "INTEGER", "A", ""),
        ("origVideoTransportAddress_IP", "INTEGER", "A", ""),
        ("origVideoTransportAddress_Port", "INTEGER", "A", ""),
        ("origRSVPAudioStat", "VARCHAR(64)", "A", "VARCHAR but numeric text \"0\"..\"5\""),
        ("origRSVPVideoStat", "VARCHAR(64)", "A", "VARCHAR but numeric text \"0\"..\"5\""),
        ("destLegIdentifier", "INTEGER", "A", "called leg id; 0 if destination never reached"),
        ("destNodeId", "INTEGER", "A", ""),
        ("destSpan", "INTEGER", "A", "same rules as origSpan"),
        ("destIpAddr", "INTEGER", "A", "IPv4 signed int32 LE; can be non-zero on unanswered calls"),
        ("originalCalledPartyNumber", "VARCHAR(50)", "A", "number as first presented (after translations), before forwarding"),
        ("finalCalledPartyNumber", "VARCHAR(50)", "A", "number finally presented; conference bridge id like b0019901001"),
        ("finalCalledPartyUnicodeLoginUserID", "VARCHAR(128)", "A", ""),
        ("destCause_location", "INTEGER", "A", ""),
        ("destCause_value", "INTEGER", "A", "cause when DESTINATION cleared / rejected; 0 otherwise"),
        ("destPrecedenceLevel", "INTEGER", "A", ""),
        ("destMediaTransportAddress_IP", "INTEGER", "A", ""),
        ("destMediaTransportAddress_Port", "INTEGER", "A", ""),
        ("destMediaCap_payloadCapability", "INTEGER", "A", ""),
        ("destMediaCap_maxFramesPerPacket", "INTEGER", "A", ""),
        ("destMediaCap_g723BitRate", "INTEGER", "A", ""),
        ("destVideoCap_Codec", "INTEGER", "A", ""),
        ("destVideoCap_Bandwidth", "INTEGER", "A", ""),
        ("destVideoCap_Resolution", "INTEGER", "A", ""),
        ("destVideoTransportAddress_IP", "INTEGER", "A", ""),
        ("destVideoTransportAddress_Port", "INTEGER", "A", ""),
        ("destRSVPAudioStat", "VARCHAR(64)", "A", "VARCHAR numeric text"),
        ("destRSVPVideoStat", "VARCHAR(64)", "A", "VARCHAR numeric text"),
        ("dateTimeConnect", "INTEGER", "A", "UTC epoch s; 0 = never connected"),
        ("dateTimeDisconnect", "INTEGER", "A", "UTC epoch s; always set"),
        ("lastRedirectDn", "VARCHAR(50)", "A", "next-to-last hop for forwarded calls"),
        ("pkid", "UNIQUEIDENTIFIER", "A", "UUID, unique per row"),
        ("originalCalledPartyNumberPartition", "VARCHAR(50)", "A", ""),
        ("callingPartyNumberPartition", "VARCHAR(50)", "A", ""),
        ("finalCalledPartyNumberPartition", "VARCHAR(50)", "A", ""),
        ("lastRedirectDnPartition", "VARCHAR(50)", "A", ""),
        ("duration", "INTEGER", "A", "seconds connected; 0 if never connected OR <1 s"),
        ("origDeviceName", "VARCHAR(129)", "A", "e.g. SEP<MAC>, trunk/gateway name"),
        ("destDeviceName", "VARCHAR(129)", "A", "may be empty"),
        ("origCallTerminationOnBehalfOf", "INTEGER", "A", "OnBehalfOf code (12 = device hung up, 10 = transfer)"),
        ("destCallTerminationOnBehalfOf", "INTEGER", "A", "OnBehalfOf code"),
        ("origCalledPartyRedirectOnBehalfOf", "INTEGER", "A", "OnBehalfOf code"),
        ("lastRedirectRedirectOnBehalfOf", "INTEGER", "A", "OnBehalfOf code"),
        ("origCalledPartyRedirectReason", "INTEGER", "A", "redirect reason code"),
        ("lastRedirectRedirectReason", "INTEGER", "A", "redirect reason code"),
        ("destConversationId", "INTEGER", "A", "same for all legs of one conference"),
        ("globalCallId_ClusterID", "VARCHAR(50)", "A", "Cluster ID enterprise parameter text (default StandAloneCluster)"),
        ("joinOnBehalfOf", "INTEGER", "A", "OnBehalfOf code (10 on final transferred call, 4 conference)"),
        ("comment", "VARCHAR(2048)", "A", "feature tags, e.g. ConfControllerDn=...;ConfControllerDeviceName=...; CallFlag=MALICIOUS"),
        ("authCodeDescription", "VARCHAR(50)", "A", "FAC description"),
        ("authorizationLevel", "INTEGER", "A", "FAC level"),
        ("clientMatterCode", "VARCHAR(32)", "A", "CMC"),
        ("origDTMFMethod", "INTEGER", "A", "0 none/any,1 OOB,2 RFC2833,3 both,4 unknown"),
        ("destDTMFMethod", "INTEGER", "A", "as origDTMFMethod"),
        ("callSecuredStatus", "INTEGER", "A", "0 non-secure, 1 authenticated, 2 encrypted (highest reached)"),
        ("origConversationId", "INTEGER", "A", "conference id of originating leg (conference chaining)"),
        ("origMediaCap_Bandwidth", "INTEGER", "A", "kbps"),
        ("destMediaCap_Bandwidth", "INTEGER", "A", "kbps"),
        ("authorizationCodeValue", "VARCHAR(32)", "A", "FAC value (if Display FAC in CDR)"),
        ("outpulsedCallingPartyNumber", "VARCHAR(50)", "A", "only when transformed at the device"),
        ("outpulsedCalledPartyNumber", "VARCHAR(50)", "A", "only when transformed at the device"),
        ("origIpv4v6Addr", "VARCHAR(64)", "A", "text IPv4 dotted or IPv6 colon-hex; prefer over origIpAddr"),
        ("destIpv4v6Addr", "VARCHAR(64)", "A", "text; empty if destination not reached"),
        ("origVideoCap_Codec_Channel2", "INTEGER", "A", ""),
        ("origVideoCap_Bandwidth_Channel2", "INTEGER", "A", ""),
        ("origVideoCap_Resolution_Channel2", "INTEGER", "A", ""),
        ("origVideoTransportAddress_IP_Channel2", "INTEGER", "A", ""),
        ("origVideoTransportAddress_Port_Channel2", "INTEGER", "A", ""),
        ("origVideoChannel_Role_Channel2", "INTEGER", "A", ""),
        ("destVideoCap_Codec_Channel2", "INTEGER", "A", ""),
        ("destVideoCap_Bandwidth_Channel2", "INTEGER", "A", ""),
        ("destVideoCap_Resolution_Channel2", "INTEGER", "A", ""),
        ("destVideoTransportAddress_IP_Channel2", "INTEGER", "A", ""),
        ("destVideoTransportAddress_Port_Channel2", "INTEGER", "A", ""),
        ("destVideoChannel_Role_Channel2", "INTEGER", "A", ""),
        ("IncomingProtocolID", "INTEGER", "A", "0 unknown,1 SIP,2 H.323,3 CTI/JTAPI,4 Q.931"),
        ("IncomingProtocolCallRef", "VARCHAR(32)", "A", "upstream call ref, <=32 chars"),
        ("OutgoingProtocolID", "INTEGER", "A", "as IncomingProtocolID"),
        ("OutgoingProtocolCallRef", "VARCHAR(32)", "A", "downstream call ref, <=32 chars"),
        ("currentRoutingReason", "INTEGER", "A", "external call control (0-8)"),
        ("origRoutingReason", "INTEGER", "A", ""),
        ("lastRedirectingRoutingReason", "INTEGER", "A", ""),
        ("huntPilotPartition", "VARCHAR(50)", "A", "doc: partition of the hunt pilot; 2018 files hold a UUID here, not a name"),
        ("huntPilotDN", "VARCHAR(50)", "A", "set only when a hunt member answered"),
        ("calledPartyPatternUsage", "INTEGER", "A", "pattern type, 2 device, 5 route, 7 hunt pilot ..."),
        ("IncomingICID", "VARCHAR(50)", "A", "IMS P-Charging-Vector"),
        ("IncomingOrigIOI", "VARCHAR(50)", "A", ""),
        ("IncomingTermIOI", "VARCHAR(50)", "A", ""),
        ("OutgoingICID", "VARCHAR(50)", "A", ""),
        ("OutgoingOrigIOI", "VARCHAR(50)", "A", ""),
        ("OutgoingTermIOI", "VARCHAR(50)", "A", ""),
        ("outpulsedOriginalCalledPartyNumber", "VARCHAR(50)", "A", ""),
        ("outpulsedLastRedirectingNumber", "VARCHAR(50)", "A", ""),
        ("wasCallQueued", "INTEGER", "A", "1 if native call queuing queued the call"),
        ("totalWaitTimeInQueue", "INTEGER", "A", "seconds in queue"),
        ("callingPartyNumber_uri", "VARCHAR(255)", "A", "directory URI of caller"),
        ("originalCalledPartyNumber_uri", "VARCHAR(255)", "A", ""),
        ("finalCalledPartyNumber_uri", "VARCHAR(255)", "A", ""),
        ("lastRedirectDn_uri", "VARCHAR(255)", "A", ""),
        ("mobileCallingPartyNumber", "VARCHAR(50)", "B", ""),
        ("finalMobileCalledPartyNumber", "VARCHAR(50)", "B", ""),
        ("origMobileDeviceName", "VARCHAR(129)", "B", ""),
        ("destMobileDeviceName", "VARCHAR(129)", "B", ""),
        ("origMobileCallDuration", "INTEGER", "B", ""),
        ("destMobileCallDuration", "INTEGER", "B", ""),
        ("mobileCallType", "INTEGER", "B", "mobility feature code"),
        ("originalCalledPartyPattern", "VARCHAR(50)", "B", "pattern matched before translation"),
        ("finalCalledPartyPattern", "VARCHAR(50)", "B", ""),
        ("lastRedirectingPartyPattern", "VARCHAR(50)", "B", ""),
        ("huntPilotPattern", "VARCHAR(50)", "B", "set only when a hunt member answered"),
        ("origDeviceType", "VARCHAR(100)", "C", "\"CiscoSparkRemoteDevice\" or empty"),
        ("destDeviceType", "VARCHAR(100)", "C", "\"CiscoSparkRemoteDevice\" or empty"),
        ("origDeviceSessionID", "VARCHAR(128)", "C", "Session-ID of originating device (<=127 chars)"),
        ("destDeviceSessionID", "VARCHAR(128)", "C", "Session-ID of destination device"),
    )
)

CMR_FIELDS = _fields(
    (
        ("cdrRecordType", "INTEGER", "A", "always 2"),
        ("globalCallID_callManagerId", "INTEGER", "A", "joins to CDR"),
        ("globalCallID_callId", "INTEGER", "A", "joins to CDR"),
        ("nodeId", "INTEGER", "A", "node that wrote the record"),
        ("directoryNum", "VARCHAR(50)", "A", "doc calls it directoryNumber; quoted string"),
        ("callIdentifier", "INTEGER", "A", "leg id = CDR origLegCallIdentifier or destLegIdentifier"),
        ("dateTimeStamp", "INTEGER", "A", "UTC epoch s, approx on-hook time"),
        ("numberPacketsSent", "INTEGER", "A", ""),
        ("numberOctetsSent", "INTEGER", "A", ""),
        ("numberPacketsReceived", "INTEGER", "A", ""),
        ("numberOctetsReceived", "INTEGER", "A", ""),
        ("numberPacketsLost", "INTEGER", "A", "may be negative (duplicates) per docs"),
        ("jitter", "INTEGER", "A", "ms"),
        ("latency", "INTEGER", "A", "ms; not reported by some phone loads"),
        ("pkid", "UNIQUEIDENTIFIER", "A", "UUID per row"),
        ("directoryNumPartition", "VARCHAR(50)", "A", "doc calls it directoryNumberPartition"),
        ("globalCallId_ClusterID", "VARCHAR(50)", "A", ""),
        ("deviceName", "VARCHAR(129)", "A", "phone, gateway port (e.g. S0/SU0/DS1-0/30) or SIP trunk name"),
        ("varVQMetrics", "VARCHAR(600)", "A", "key=value;key=value (see below)"),
        ("duration", "INTEGER", "B", "seconds of audio session"),
        ("videoContentType", "VARCHAR(10)", "B", "main/speaker/slides; empty for audio-only"),
        ("videoDuration", "INTEGER", "B", ""),
        ("numberVideoPacketsSent", "INTEGER", "B", ""),
        ("numberVideoOctetsSent", "INTEGER", "B", ""),
        ("numberVideoPacketsReceived", "INTEGER", "B", ""),
        ("numberVideoOctetsReceived", "INTEGER", "B", ""),
        ("numberVideoPacketsLost", "INTEGER", "B", ""),
        ("videoAverageJitter", "INTEGER", "B", ""),
        ("videoRoundTripTime", "INTEGER", "B", ""),
        ("videoOneWayDelay", "INTEGER", "B", "doc: ms or \"NA\"; header says INTEGER"),
        ("videoReceptionMetrics", "VARCHAR(600)", "B", "CiscoRxVM key=value; list"),
        ("videoTransmissionMetrics", "VARCHAR(600)", "B", "CiscoTxVM key=value; list"),
        ("videoContentType_channel2", "VARCHAR(10)", "B", ""),
        ("videoDuration_channel2", "INTEGER", "B", ""),
        ("numberVideoPacketsSent_channel2", "INTEGER", "B", ""),
        ("numberVideoOctetsSent_channel2", "INTEGER", "B", ""),
        ("numberVideoPacketsReceived_channel2", "INTEGER", "B", ""),
        ("numberVideoOctetsReceived_channel2", "INTEGER", "B", ""),
        ("numberVideoPacketsLost_channel2", "INTEGER", "B", ""),
        ("videoAverageJitter_channel2", "INTEGER", "B", ""),
        ("videoRoundTripTime_channel2", "INTEGER", "B", ""),
        ("videoOneWayDelay_channel2", "INTEGER", "B", ""),
        ("videoReceptionMetrics_channel2", "VARCHAR(600)", "B", ""),
        ("videoTransmissionMetrics_channel2", "VARCHAR(600)", "B", ""),
        ("localSessionID", "VARCHAR(128)", "C", "= CDR orig/destDeviceSessionID of this device"),
        ("remoteSessionID", "VARCHAR(128)", "C", "Session-ID of far device"),
        ("headsetSN", "VARCHAR(129)", "C", "doc calls it SN"),
        ("headsetMetrics", "VARCHAR(1024)", "C", "doc calls it Metrics; free key=value; list"),
    )
)

# Field counts of each header generation, by kind.
GENERATIONS = {"cdr": {"A": 118, "B": 129, "C": 133}, "cmr": {"A": 19, "B": 44, "C": 48}}

CDR_BY_NAME = {f.name.lower(): f for f in CDR_FIELDS}
CMR_BY_NAME = {f.name.lower(): f for f in CMR_FIELDS}

# Names in Cisco's documentation that differ from the names in real files.
ALIASES = {
    "directorynumber": "directoryNum",
    "directorynumberpartition": "directoryNumPartition",
    "sn": "headsetSN",
    "metrics": "headsetMetrics",
    "cmrrecordtype": "cdrRecordType",
}


def header(kind: str, count: int) -> list[str]:
    """The header of one generation, e.g. header("cdr", 129)."""
    fields = CDR_FIELDS if kind == "cdr" else CMR_FIELDS
    if count not in GENERATIONS[kind].values():
        raise ValueError(f"no {kind.upper()} generation has {count} fields")
    return [f.name for f in fields[:count]]
